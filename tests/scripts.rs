//! Table-driven tests of every Lua script's state transitions, in the manner of asynq's
//! `rdb_test.go`: each case seeds the keys of one partition, makes one script call through its
//! typed wrapper, and asserts the reply and the whole resulting state of the partition: every key
//! that exists, every field of every task hash and its TTL, every sorted set with its scores, the
//! stats counters, and the wake-up messages published.
//!
//! Each test starts its own `redis-server`; the cases of one test use one queue each, so they do
//! not see each other. Times that come from the Redis clock are checked against `TIME` read just
//! before and just after the call; seeded times are fixed, far in the past (`1000`) or far in the
//! future ([`FAR`]), so most scores are exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use redis::{Commands, Connection};
use scheduler::info::take_blob;
use scheduler::scripts::{
    AckItem, CancelReply, Claimed, Due, FailItem, NewTask, Outcome, MAX_BATCH,
};
use scheduler::store::{Partition, Store};

use scheduler_testkit::RedisServer;

/// Every partition of these tests is shard 3, so a wrong shard in a message shows.
const SHARD: u16 = 3;
/// A due time or lease deadline far in the future (2096), never reached by a test.
const FAR: i64 = 4_000_000_000_000;
/// The arguments of every seeded task: MessagePack `[42]`.
const ARGS: &[u8] = &[0x91, 0x2a];
/// The `max_lost` of every reap call: leases a task may lose before it is buried.
const MAX_LOST: u32 = 2;
/// Sentinel published after a call, so we know every message of the call has arrived.
const END: &str = "--end--";

/// Score of a task in a ready set, as `_prelude.lua` computes it.
fn ready_score(priority: i64, t: i64) -> i64 {
    (9 - priority) * 10_000_000_000_000 + t
}

// ---------------------------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------------------------

/// The Redis clock around one call: `TIME` just before and just after, unix ms.
#[derive(Debug, Clone, Copy)]
struct Clock {
    t0: i64,
    t1: i64,
}

/// An expected value of a hash field, a sorted-set score or a reply number.
#[derive(Debug, Clone, PartialEq)]
enum W {
    /// This integer.
    I(i64),
    /// These bytes.
    B(Vec<u8>),
    /// The script's server clock plus this offset (ms): within `[t0 + off, t1 + off]`.
    Now(i64),
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
    fn seed_bytes(&self) -> Vec<u8> {
        match self {
            W::I(i) => i.to_string().into_bytes(),
            W::B(b) => b.clone(),
            W::Now(_) => panic!("a seed holds exact values only"),
        }
    }

    fn matches_int(&self, got: i64, c: Clock) -> bool {
        match self {
            W::I(i) => got == *i,
            W::B(b) => b == got.to_string().as_bytes(),
            W::Now(off) => (c.t0 + off..=c.t1 + off).contains(&got),
        }
    }

    fn matches(&self, got: &[u8], c: Clock) -> bool {
        match self {
            W::B(b) => b == got,
            _ => std::str::from_utf8(got)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|g| self.matches_int(g, c)),
        }
    }
}

/// The fields of a task hash.
#[derive(Debug, Clone)]
struct Rec(BTreeMap<&'static str, W>);

impl Rec {
    /// The fields `enqueue.lua` writes, in state `state`, with fixed times: due at 1000,
    /// enqueued at 900, priority 5, 3 retries, 30 s timeout, no attempt and no token yet (the
    /// queue is in the key, not in the hash).
    fn new(state: &str) -> Self {
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

    fn with(mut self, field: &'static str, v: impl Into<W>) -> Self {
        self.0.insert(field, v.into());
        self
    }

    fn without(mut self, field: &'static str) -> Self {
        self.0.remove(field);
        self
    }
}

/// A task claimed by worker `w1` at 950, holding lease `token`, on its attempt `attempts`.
fn running(token: i64, attempts: i64) -> Rec {
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
struct St {
    drained: Option<&'static str>,
    tasks: Vec<(&'static str, Rec, Option<i64>)>,
    scheduled: Vec<(&'static str, W)>,
    ready: Vec<(&'static str, W)>,
    active: Vec<(&'static str, W)>,
    dead: Vec<(&'static str, W)>,
    stats: Vec<(&'static str, i64)>,
}

impl St {
    fn task(mut self, id: &'static str, rec: Rec) -> Self {
        self.tasks.push((id, rec, None));
        self
    }

    /// A task hash that expires `ttl_ms` after the call.
    fn task_ttl(mut self, id: &'static str, rec: Rec, ttl_ms: i64) -> Self {
        self.tasks.push((id, rec, Some(ttl_ms)));
        self
    }

    fn sched(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.scheduled.push((id, score.into()));
        self
    }

    fn ready(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.ready.push((id, score.into()));
        self
    }

    fn active(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.active.push((id, score.into()));
        self
    }

    fn dead(mut self, id: &'static str, score: impl Into<W>) -> Self {
        self.dead.push((id, score.into()));
        self
    }

    /// The drained flag (`0`: the workers are claiming; `1`: a claim found the ready set empty).
    fn drained(mut self, v: &'static str) -> Self {
        self.drained = Some(v);
        self
    }

    fn stat(mut self, counter: &'static str, n: i64) -> Self {
        self.stats.push((counter, n));
        self
    }

    fn zsets(&self, p: &Partition) -> [(String, &[(&'static str, W)]); 4] {
        [
            (p.keys.scheduled(), &self.scheduled),
            (p.keys.ready(), &self.ready),
            (p.keys.active(), &self.active),
            (p.keys.dead(), &self.dead),
        ]
    }

    /// Writes this state into partition `p` with raw commands.
    fn seed(&self, conn: &mut Connection, p: &Partition) {
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
fn partition_keys(conn: &mut Connection, p: &Partition) -> BTreeSet<String> {
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
fn assert_state(conn: &mut Connection, p: &Partition, want: &St, c: Clock, case: &str) {
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
enum M {
    /// `r:<shard>`: the ready set got work.
    R,
    /// `s:<shard>:<due>`: the scheduled set got an earlier head.
    S(W),
}

fn assert_msgs(got: &[String], want: &[M], c: Clock, case: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: messages {got:?}, want {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        match w {
            M::R => assert_eq!(g, &format!("r:{SHARD}"), "{case}: message"),
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
struct Fx {
    server: RedisServer,
    store: Store,
}

async fn fx() -> Fx {
    let server = RedisServer::start();
    let store = Store::connect(&server.url(), "t").await.unwrap();
    Fx { server, store }
}

/// Reads the Redis clock (unix ms) the way `_prelude.lua` does.
fn server_ms(conn: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(conn).unwrap();
    s * 1000 + us / 1000
}

/// What one call gave.
struct Ran<T> {
    p: Partition,
    reply: T,
    clock: Clock,
    msgs: Vec<String>,
}

/// Seeds partition (`queue`, [`SHARD`]) with `seed`, listens on its wake-up channel, makes the
/// call, and collects the messages it published.
async fn run<T>(
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

fn new_task(id: &str, due: Due, priority: u8) -> NewTask {
    NewTask {
        id: id.into(),
        name: "job".into(),
        args: ARGS.to_vec(),
        due,
        max_retries: 3,
        timeout_ms: 30_000,
        priority,
    }
}

/// The record `enqueue.lua` writes for [`new_task`], due at `run_at`.
fn enqueued(state: &str, priority: i64, run_at: W) -> Rec {
    Rec::new(state)
        .with("priority", priority)
        .with("run_at", run_at)
        .with("enqueued_at", W::Now(0))
}

/// A task in state `state` with priority `priority`, due at `run_at`.
fn at(state: &str, priority: i64, run_at: i64) -> Rec {
    Rec::new(state)
        .with("priority", priority)
        .with("run_at", run_at)
}

// ---------------------------------------------------------------------------------------------
// enqueue
// ---------------------------------------------------------------------------------------------

struct EnqueueCase {
    name: &'static str,
    seed: fn(&str) -> St,
    tasks: Vec<NewTask>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// enqueue puts due tasks in the ready set and delayed ones in the scheduled set, leaves an
/// existing id untouched, counts `enqueued`, and publishes `r:` only when the ready set was empty
/// and `s:` only when the scheduled head got earlier.
#[tokio::test]
async fn enqueue_transitions() {
    use Due::{At, Delay};
    let cases = [
        EnqueueCase {
            name: "due now goes to ready, scored by priority then due time",
            seed: |_| St::default(),
            tasks: vec![new_task("a", Delay(0), 3)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", enqueued("ready", 3, W::Now(0)))
                    .ready("a", W::Now(ready_score(3, 0)))
                    .stat("enqueued", 1)
            },
            msgs: vec![M::R],
        },
        EnqueueCase {
            name: "delayed goes to scheduled at server now + delay",
            seed: |_| St::default(),
            tasks: vec![new_task("a", Delay(60_000), 5)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", enqueued("scheduled", 5, W::Now(60_000)))
                    .sched("a", W::Now(60_000))
                    .stat("enqueued", 1)
            },
            msgs: vec![M::S(W::Now(60_000))],
        },
        EnqueueCase {
            name: "absolute run-at in the past goes to ready at that time",
            seed: |_| St::default(),
            tasks: vec![new_task("a", At(1000), 0)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", enqueued("ready", 0, W::I(1000)))
                    .ready("a", ready_score(0, 1000))
                    .stat("enqueued", 1)
            },
            msgs: vec![M::R],
        },
        EnqueueCase {
            name: "absolute run-at in the future goes to scheduled",
            seed: |_| St::default(),
            tasks: vec![new_task("a", At(FAR), 5)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", enqueued("scheduled", 5, W::I(FAR)))
                    .sched("a", FAR)
                    .stat("enqueued", 1)
            },
            msgs: vec![M::S(W::I(FAR))],
        },
        EnqueueCase {
            name: "duplicate id replies 0 and leaves the record as it was",
            seed: |_| {
                St::default()
                    .task("a", running(7, 1).with("name", "old"))
                    .active("a", FAR)
            },
            tasks: vec![new_task("a", Delay(0), 9)],
            reply: vec![Outcome::Exists],
            want: |_| {
                St::default()
                    .task("a", running(7, 1).with("name", "old"))
                    .active("a", FAR)
            },
            msgs: vec![],
        },
        EnqueueCase {
            name: "several tasks in one call, one duplicate within the call",
            seed: |_| St::default().stat("enqueued", 10),
            tasks: vec![
                new_task("a", Delay(0), 9),
                new_task("b", Delay(60_000), 5),
                new_task("c", At(1000), 0),
                new_task("a", Delay(0), 1),
                new_task("d", Delay(30_000), 5),
            ],
            reply: vec![
                Outcome::Done,
                Outcome::Done,
                Outcome::Done,
                Outcome::Exists,
                Outcome::Done,
            ],
            want: |_| {
                St::default()
                    .task("a", enqueued("ready", 9, W::Now(0)))
                    .task("b", enqueued("scheduled", 5, W::Now(60_000)))
                    .task("c", enqueued("ready", 0, W::I(1000)))
                    .task("d", enqueued("scheduled", 5, W::Now(30_000)))
                    .ready("a", W::Now(ready_score(9, 0)))
                    .ready("c", ready_score(0, 1000))
                    .sched("d", W::Now(30_000))
                    .sched("b", W::Now(60_000))
                    .stat("enqueued", 14)
            },
            // One `s:` per call, naming the final (earliest) head.
            msgs: vec![M::R, M::S(W::Now(30_000))],
        },
        EnqueueCase {
            name: "ready set non-empty, workers still claiming (drained 0): no r: message",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .ready("x", 5)
            },
            tasks: vec![new_task("a", Delay(0), 5)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", enqueued("ready", 5, W::Now(0)))
                    .ready("x", 5)
                    .ready("a", W::Now(ready_score(5, 0)))
                    .stat("enqueued", 1)
            },
            msgs: vec![],
        },
        EnqueueCase {
            name: "due after the scheduled head: no s: message",
            seed: |_| {
                St::default()
                    .task("x", at("scheduled", 5, FAR))
                    .sched("x", FAR)
            },
            tasks: vec![new_task("a", At(FAR + 1000), 5)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("x", at("scheduled", 5, FAR))
                    .task("a", enqueued("scheduled", 5, W::I(FAR + 1000)))
                    .sched("x", FAR)
                    .sched("a", FAR + 1000)
                    .stat("enqueued", 1)
            },
            msgs: vec![],
        },
        EnqueueCase {
            name: "due before the scheduled head: s: with the new head",
            seed: |_| {
                St::default()
                    .task("x", at("scheduled", 5, FAR))
                    .sched("x", FAR)
            },
            tasks: vec![new_task("a", At(FAR - 1000), 5)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("x", at("scheduled", 5, FAR))
                    .task("a", enqueued("scheduled", 5, W::I(FAR - 1000)))
                    .sched("a", FAR - 1000)
                    .sched("x", FAR)
                    .stat("enqueued", 1)
            },
            msgs: vec![M::S(W::I(FAR - 1000))],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("enq{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.enqueue(p, &case.tasks).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

/// enqueue_many runs one enqueue per partition in one pipeline (through the NOSCRIPT fallback on
/// a fresh server) and writes each group into its own partition only.
#[tokio::test]
async fn enqueue_many_writes_each_partition() {
    let fx = fx().await;
    let p1 = fx.store.partition("many", 1);
    let p2 = fx.store.partition("many", 2);
    let mut conn = fx.server.conn();
    let t0 = server_ms(&mut conn);
    let g1 = [new_task("a", Due::Delay(0), 5)];
    let g2 = [
        new_task("b", Due::At(FAR), 5),
        new_task("c", Due::At(1000), 2),
    ];
    let reply = fx
        .store
        .enqueue_many(&[(&p1, &g1[..]), (&p2, &g2[..])])
        .await
        .unwrap();
    let c = Clock {
        t0,
        t1: server_ms(&mut conn),
    };
    assert_eq!(
        reply,
        vec![vec![Outcome::Done], vec![Outcome::Done, Outcome::Done]]
    );
    let want1 = St::default()
        .task("a", enqueued("ready", 5, W::Now(0)))
        .ready("a", W::Now(ready_score(5, 0)))
        .stat("enqueued", 1);
    let want2 = St::default()
        .task("b", enqueued("scheduled", 5, W::I(FAR)))
        .task("c", enqueued("ready", 2, W::I(1000)))
        .sched("b", FAR)
        .ready("c", ready_score(2, 1000))
        .stat("enqueued", 2);
    assert_state(&mut conn, &p1, &want1, c, "shard 1");
    assert_state(&mut conn, &p2, &want2, c, "shard 2");
}

// ---------------------------------------------------------------------------------------------
// promote
// ---------------------------------------------------------------------------------------------

struct PromoteCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    moved: u64,
    next_due: Option<i64>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// promote moves only due tasks, at most a batch, scored by priority and due time; drops ids
/// whose hash is gone; counts `promoted`; replies with the next head and the server clock; and
/// publishes `r:` only when the ready set was empty.
#[tokio::test]
async fn promote_transitions() {
    let cases = [
        PromoteCase {
            name: "only due tasks move, state ready",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 2, 1000))
                    .task("b", at("scheduled", 9, 2000))
                    .task("c", at("scheduled", 5, FAR))
                    .sched("a", 1000)
                    .sched("b", 2000)
                    .sched("c", FAR)
            },
            batch: 100,
            moved: 2,
            next_due: Some(FAR),
            want: |_| {
                St::default()
                    .task("a", at("ready", 2, 1000))
                    .task("b", at("ready", 9, 2000))
                    .task("c", at("scheduled", 5, FAR))
                    .sched("c", FAR)
                    .ready("b", ready_score(9, 2000))
                    .ready("a", ready_score(2, 1000))
                    .stat("promoted", 2)
            },
            msgs: vec![M::R],
        },
        PromoteCase {
            name: "a priority edited to garbage counts as 0 and does not fail the batch",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, 1000).with("priority", "high"))
                    .task("b", at("scheduled", 9, 2000))
                    .sched("a", 1000)
                    .sched("b", 2000)
            },
            batch: 100,
            moved: 2,
            next_due: None,
            want: |_| {
                St::default()
                    .task("a", at("ready", 5, 1000).with("priority", "high"))
                    .task("b", at("ready", 9, 2000))
                    .ready("b", ready_score(9, 2000))
                    .ready("a", ready_score(0, 1000))
                    .stat("promoted", 2)
            },
            msgs: vec![M::R],
        },
        PromoteCase {
            name: "batch limit honoured, earliest first; next head may already be due",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, 1000))
                    .task("b", at("scheduled", 5, 2000))
                    .task("c", at("scheduled", 5, 3000))
                    .sched("a", 1000)
                    .sched("b", 2000)
                    .sched("c", 3000)
            },
            batch: 2,
            moved: 2,
            next_due: Some(3000),
            want: |_| {
                St::default()
                    .task("a", at("ready", 5, 1000))
                    .task("b", at("ready", 5, 2000))
                    .task("c", at("scheduled", 5, 3000))
                    .sched("c", 3000)
                    .ready("a", ready_score(5, 1000))
                    .ready("b", ready_score(5, 2000))
                    .stat("promoted", 2)
            },
            msgs: vec![M::R],
        },
        PromoteCase {
            name: "id whose hash is gone is only removed from scheduled",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, 2000))
                    .sched("ghost", 1000)
                    .sched("a", 2000)
            },
            batch: 100,
            moved: 1,
            next_due: None,
            want: |_| {
                St::default()
                    .task("a", at("ready", 5, 2000))
                    .ready("a", ready_score(5, 2000))
                    .stat("promoted", 1)
            },
            msgs: vec![M::R],
        },
        PromoteCase {
            name: "only ghosts: removed, nothing counted, no message",
            seed: |_| St::default().sched("ghost", 1000),
            batch: 100,
            moved: 0,
            next_due: None,
            want: |_| St::default(),
            msgs: vec![],
        },
        PromoteCase {
            name: "ready set already non-empty: no r: message, counter adds up",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", at("scheduled", 5, 1000))
                    .ready("x", 5)
                    .sched("a", 1000)
                    .stat("promoted", 5)
            },
            batch: 100,
            moved: 1,
            next_due: None,
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", at("ready", 5, 1000))
                    .ready("x", 5)
                    .ready("a", ready_score(5, 1000))
                    .stat("promoted", 6)
            },
            msgs: vec![],
        },
        PromoteCase {
            name: "nothing due: nothing moves",
            seed: |_| {
                St::default()
                    .task("c", at("scheduled", 5, FAR))
                    .sched("c", FAR)
            },
            batch: 100,
            moved: 0,
            next_due: Some(FAR),
            want: |_| {
                St::default()
                    .task("c", at("scheduled", 5, FAR))
                    .sched("c", FAR)
            },
            msgs: vec![],
        },
        PromoteCase {
            name: "empty partition",
            seed: |_| St::default(),
            batch: 100,
            moved: 0,
            next_due: None,
            want: |_| St::default(),
            msgs: vec![],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("pro{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.promote(p, case.batch).await.unwrap()
        })
        .await;
        let r = ran.reply;
        assert_eq!(r.moved, case.moved, "{}: moved", case.name);
        assert_eq!(r.next_due_ms, case.next_due, "{}: next due", case.name);
        assert!(
            W::Now(0).matches_int(r.server_now_ms, ran.clock),
            "{}: server now {} outside {:?}",
            case.name,
            r.server_now_ms,
            ran.clock
        );
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

/// promote never moves a task before its time on the server clock: enqueued with a 200 ms delay
/// and promoted at once, nothing moves; once the server clock passes its due time, it moves.
#[tokio::test]
async fn promote_never_moves_a_task_early() {
    let fx = fx().await;
    let p = fx.store.partition("early", SHARD);
    let mut conn = fx.server.conn();
    let t0 = server_ms(&mut conn);
    fx.store
        .enqueue(&p, &[new_task("a", Due::Delay(200), 5)])
        .await
        .unwrap();
    let r = fx.store.promote(&p, 100).await.unwrap();
    let c = Clock {
        t0,
        t1: server_ms(&mut conn),
    };
    assert_eq!(r.moved, 0, "a task due in 200 ms moved at once");
    let due = r.next_due_ms.expect("the task is still scheduled");
    assert!(
        W::Now(200).matches_int(due, c),
        "due {due} outside {c:?}+200"
    );
    assert!(r.server_now_ms < due);
    let want = St::default()
        .task("a", enqueued("scheduled", 5, W::I(due)))
        .sched("a", due)
        .stat("enqueued", 1);
    assert_state(&mut conn, &p, &want, c, "before its time");

    // Wait on the server's clock, not ours.
    while server_ms(&mut conn) < due {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = fx.store.promote(&p, 100).await.unwrap();
    assert_eq!((r.moved, r.next_due_ms), (1, None));
    assert!(r.server_now_ms >= due);
    let want = St::default()
        .task("a", enqueued("ready", 5, W::I(due)))
        .ready("a", ready_score(5, due))
        .stat("enqueued", 1)
        .stat("promoted", 1);
    assert_state(&mut conn, &p, &want, c, "after its time");
}

/// Eight promoters racing on one partition move each of 2,000 tasks exactly once: every task
/// ends in the ready set, the moved counts add up to 2,000 and so does `promoted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_promoters_move_each_task_once() {
    const N: usize = 2000;
    let fx = fx().await;
    let p = fx.store.partition("race", SHARD);
    let tasks: Vec<NewTask> = (0..N)
        .map(|i| new_task(&format!("t{i:04}"), Due::Delay(1 + (i % 50) as u64), 5))
        .collect();
    let reply = fx.store.enqueue(&p, &tasks).await.unwrap();
    assert!(reply.iter().all(|o| *o == Outcome::Done));
    let mut conn = fx.server.conn();
    let scheduled: usize = redis::cmd("ZCARD")
        .arg(p.keys.scheduled())
        .query(&mut conn)
        .unwrap();
    assert_eq!(scheduled, N, "every task starts scheduled");

    let mut promoters = Vec::new();
    for _ in 0..8 {
        // A connection of its own each, as separate worker processes would have.
        let store = Store::connect(&fx.server.url(), "t").await.unwrap();
        let p = p.clone();
        promoters.push(tokio::spawn(async move {
            let mut moved = 0;
            loop {
                let r = store.promote(&p, 100).await.unwrap();
                moved += r.moved;
                if r.next_due_ms.is_none() {
                    return moved;
                }
                if r.moved == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    let mut moved = 0;
    for h in promoters {
        moved += h.await.unwrap();
    }
    assert_eq!(moved, N as u64, "moved counts of all promoters");

    let ready: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(p.keys.ready())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut conn)
        .unwrap();
    let ids: BTreeSet<&str> = ready.iter().map(|(id, _)| id.as_str()).collect();
    let want: BTreeSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ready.len(), N);
    assert_eq!(ids, want, "every task in ready exactly once");
    let mut pipe = redis::pipe();
    for t in &tasks {
        pipe.cmd("HMGET")
            .arg(p.keys.task(&t.id))
            .arg("state")
            .arg("run_at");
    }
    let fields: Vec<(String, i64)> = pipe.query(&mut conn).unwrap();
    let run_at: BTreeMap<&str, i64> = tasks
        .iter()
        .zip(&fields)
        .map(|(t, (state, run_at))| {
            assert_eq!(state, "ready", "state of {}", t.id);
            (t.id.as_str(), *run_at)
        })
        .collect();
    for (id, score) in &ready {
        assert_eq!(*score as i64, ready_score(5, run_at[id.as_str()]), "{id}");
    }
    let stats: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(p.keys.stats())
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        stats,
        BTreeMap::from([("enqueued".into(), N as i64), ("promoted".into(), N as i64)])
    );
    assert_eq!(
        partition_keys(&mut conn, &p).len(),
        N + 3,
        "tasks, ready, stats and the drained flag only"
    );
}

// ---------------------------------------------------------------------------------------------
// claim
// ---------------------------------------------------------------------------------------------

struct ClaimCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    lease: u64,
    /// (id, token, attempt, due ms) of each task claimed, in order.
    claimed: Vec<(&'static str, i64, u32, i64)>,
    want: fn(&str) -> St,
}

/// A ready task with priority `priority`, due at `run_at`, as in a ready set.
fn ready_task(priority: i64, run_at: i64) -> Rec {
    at("ready", priority, run_at)
}

/// What claim makes of a task: running under worker `w1`, started now.
fn claimed(rec: Rec, token: i64, attempts: i64) -> Rec {
    rec.with("state", "running")
        .with("token", token)
        .with("attempts", attempts)
        .with("worker", "w1")
        .with("started_at", W::Now(0))
}

/// claim takes the highest priority, then oldest, ready tasks up to the batch; increments token
/// and attempts; marks them running under the worker with a lease of now + lease; and drops ids
/// whose hash is gone or whose state is not `ready`.
#[tokio::test]
async fn claim_transitions() {
    let cases = [
        ClaimCase {
            name: "priority then age, batch limit, token and attempts incremented",
            seed: |_| {
                St::default()
                    .task("lo_old", ready_task(1, 1000))
                    .task("hi_new", ready_task(8, 5000))
                    .task("hi_old", ready_task(8, 2000))
                    // Claimed twice before (a lost lease): token 4, attempts 2.
                    .task(
                        "mid",
                        ready_task(5, 1500)
                            .with("token", 4)
                            .with("attempts", 2)
                            .with("error", "lease expired: worker lost during attempt 2"),
                    )
                    .ready("hi_old", ready_score(8, 2000))
                    .ready("hi_new", ready_score(8, 5000))
                    .ready("mid", ready_score(5, 1500))
                    .ready("lo_old", ready_score(1, 1000))
            },
            batch: 3,
            lease: 10_000,
            claimed: vec![
                ("hi_old", 1, 1, 2000),
                ("hi_new", 1, 1, 5000),
                ("mid", 5, 3, 1500),
            ],
            want: |_| {
                St::default()
                    .task("lo_old", ready_task(1, 1000))
                    .task("hi_new", claimed(ready_task(8, 5000), 1, 1))
                    .task("hi_old", claimed(ready_task(8, 2000), 1, 1))
                    .task(
                        "mid",
                        claimed(ready_task(5, 1500), 5, 3)
                            .with("error", "lease expired: worker lost during attempt 2"),
                    )
                    .ready("lo_old", ready_score(1, 1000))
                    // Equal deadlines: Redis orders members lexicographically.
                    .active("hi_new", W::Now(10_000))
                    .active("hi_old", W::Now(10_000))
                    .active("mid", W::Now(10_000))
            },
        },
        ClaimCase {
            name: "ids whose hash is gone or state is not ready are dropped",
            seed: |_| {
                St::default()
                    .task("c", Rec::new("cancelled").with("finished_at", 950))
                    .task("a", ready_task(5, 1000))
                    .ready("ghost", 1)
                    .ready("c", 2)
                    .ready("a", ready_score(5, 1000))
            },
            batch: 10,
            lease: 30_000,
            claimed: vec![("a", 1, 1, 1000)],
            want: |_| {
                St::default()
                    .task("c", Rec::new("cancelled").with("finished_at", 950))
                    .task("a", claimed(ready_task(5, 1000), 1, 1))
                    .active("a", W::Now(30_000))
            },
        },
        ClaimCase {
            name: "empty ready set: nothing claimed, server now only",
            seed: |_| St::default(),
            batch: 10,
            lease: 30_000,
            claimed: vec![],
            want: |_| St::default(),
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("clm{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.claim(p, case.batch, case.lease, "w1").await.unwrap()
        })
        .await;
        let want: Vec<Claimed> = case
            .claimed
            .iter()
            .map(|&(id, token, attempt, due_ms)| Claimed {
                id: id.into(),
                token,
                attempt,
                name: "job".into(),
                args: ARGS.to_vec(),
                max_retries: 3,
                timeout_ms: 30_000,
                due_ms,
                lost: 0,
            })
            .collect();
        assert_eq!(ran.reply.tasks, want, "{}: claimed", case.name);
        assert!(
            W::Now(0).matches_int(ran.reply.server_now_ms, ran.clock),
            "{}: server now",
            case.name
        );
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &[], ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// ack
// ---------------------------------------------------------------------------------------------

struct AckCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<AckItem<'static>>,
    ttl: u64,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
}

/// What ack makes of a running task: succeeded now, no worker.
fn succeeded(rec: Rec) -> Rec {
    rec.with("state", "succeeded")
        .with("finished_at", W::Now(0))
}

/// ack with the right token marks the task succeeded, stores the result, sets the result TTL
/// (0 deletes the hash), leaves the active set and counts `succeeded`; a wrong token, a task not
/// running or a missing task replies -1 and changes nothing.
#[tokio::test]
async fn ack_transitions() {
    let cases = [
        AckCase {
            name: "right token: succeeded, result stored, TTL set",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            items: vec![("a", 2, b"\xa2ok")],
            ttl: 60_000,
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        succeeded(running(2, 1)).with("result", &b"\xa2ok"[..]),
                        60_000,
                    )
                    .stat("succeeded", 1)
            },
        },
        AckCase {
            name: "empty result: no result field",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            items: vec![("a", 2, b"")],
            ttl: 60_000,
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task_ttl("a", succeeded(running(2, 1)), 60_000)
                    .stat("succeeded", 1)
            },
        },
        AckCase {
            name: "wrong token: -1, nothing changes",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            items: vec![("a", 1, b"x")],
            ttl: 60_000,
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(2, 1)).active("a", FAR),
        },
        AckCase {
            name: "not running (reaped back to ready): -1, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
            items: vec![("a", 2, b"x")],
            ttl: 60_000,
            reply: vec![Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
        },
        AckCase {
            name: "retried call after a lost reply (succeeded, same token): 1, nothing changes",
            seed: |_| {
                St::default().task_ttl(
                    "a",
                    succeeded(running(3, 1)).with("finished_at", 990),
                    60_000,
                )
            },
            items: vec![("a", 3, b"x")],
            ttl: 60_000,
            reply: vec![Outcome::Done],
            want: |_| {
                St::default().task_ttl(
                    "a",
                    succeeded(running(3, 1)).with("finished_at", 990),
                    60_000,
                )
            },
        },
        AckCase {
            name: "missing task: -1, nothing created",
            seed: |_| St::default(),
            items: vec![("ghost", 1, b"x")],
            ttl: 60_000,
            reply: vec![Outcome::StaleLease],
            want: |_| St::default(),
        },
        AckCase {
            name: "ttl 0 deletes the hash",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            items: vec![("a", 2, b"x")],
            ttl: 0,
            reply: vec![Outcome::Done],
            want: |_| St::default().stat("succeeded", 1),
        },
        AckCase {
            name: "mixed batch: only the right token acknowledged, counter adds up",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .task("b", running(6, 2))
                    .active("a", FAR)
                    .active("b", FAR + 1)
                    .stat("succeeded", 4)
            },
            items: vec![("a", 2, b""), ("b", 5, b"")],
            ttl: 60_000,
            reply: vec![Outcome::Done, Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task_ttl("a", succeeded(running(2, 1)), 60_000)
                    .task("b", running(6, 2))
                    .active("b", FAR + 1)
                    .stat("succeeded", 5)
            },
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("ack{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.ack_many(&[(p, case.items.clone())], case.ttl)
                .await
                .unwrap()
        })
        .await;
        assert_eq!(ran.reply, vec![case.reply.clone()], "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &[], ran.clock, case.name);
    }
}

/// ack_many acknowledges tasks of several partitions in one pipeline, each in its own partition.
#[tokio::test]
async fn ack_many_spans_partitions() {
    let fx = fx().await;
    let p1 = fx.store.partition("acks", 1);
    let p2 = fx.store.partition("acks", 2);
    let mut conn = fx.server.conn();
    let seed = St::default().task("a", running(3, 1)).active("a", FAR);
    seed.seed(&mut conn, &p1);
    seed.seed(&mut conn, &p2);
    let t0 = server_ms(&mut conn);
    let reply = fx
        .store
        .ack_many(
            &[
                (&p1, vec![("a", 3, &b""[..])]),
                (&p2, vec![("a", 2, &b""[..])]),
            ],
            60_000,
        )
        .await
        .unwrap();
    let c = Clock {
        t0,
        t1: server_ms(&mut conn),
    };
    assert_eq!(reply, vec![vec![Outcome::Done], vec![Outcome::StaleLease]]);
    let want1 = St::default()
        .task_ttl("a", succeeded(running(3, 1)), 60_000)
        .stat("succeeded", 1);
    assert_state(&mut conn, &p1, &want1, c, "shard 1");
    assert_state(&mut conn, &p2, &seed, c, "shard 2");
}

// ---------------------------------------------------------------------------------------------
// retry
// ---------------------------------------------------------------------------------------------

struct RetryCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<FailItem<'static>>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// What retry makes of a running task with retries left: scheduled at now + `delay`.
fn rescheduled(rec: Rec, error: &str, delay: i64) -> Rec {
    rec.with("state", "scheduled")
        .with("run_at", W::Now(delay))
        .with("error", error)
        .without("worker")
}

/// A task whose lease (token 3, attempt 1) expired and was reaped back to ready.
fn reaped() -> Rec {
    ready_task(5, 1000)
        .with("token", 3)
        .with("attempts", 1)
        .with("error", "lease expired: worker lost during attempt 1")
}

/// What retry makes of a running task with no retries left: dead now.
fn buried(rec: Rec, error: &str) -> Rec {
    rec.with("state", "dead")
        .with("error", error)
        .with("finished_at", W::Now(0))
        .without("worker")
}

/// retry schedules the next attempt at now + delay while attempts <= max_retries, buries the
/// task (dead set, error kept) when retries are exhausted or the delay is `None`, and rejects a
/// stale token or a task not running with -1 and no change.
#[tokio::test]
async fn retry_transitions() {
    let cases = [
        RetryCase {
            name: "retries left: scheduled at now + delay with the error",
            seed: |_| St::default().task("a", running(3, 2)).active("a", FAR),
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", rescheduled(running(3, 2), "boom", 5000))
                    .sched("a", W::Now(5000))
                    .stat("retried", 1)
            },
            msgs: vec![M::S(W::Now(5000))],
        },
        RetryCase {
            name: "attempts == max_retries: still one retry",
            seed: |_| St::default().task("a", running(3, 3)).active("a", FAR),
            items: vec![("a", 3, "boom", Some(0))],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", rescheduled(running(3, 3), "boom", 0))
                    .sched("a", W::Now(0))
                    .stat("retried", 1)
            },
            msgs: vec![M::S(W::Now(0))],
        },
        RetryCase {
            name: "lost leases do not count: attempts 4, lost 1, max_retries 3: retried",
            seed: |_| {
                St::default()
                    .task("a", running(3, 4).with("lost", 1))
                    .active("a", FAR)
            },
            items: vec![("a", 3, "boom", Some(0))],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", rescheduled(running(3, 4).with("lost", 1), "boom", 0))
                    .sched("a", W::Now(0))
                    .stat("retried", 1)
            },
            msgs: vec![M::S(W::Now(0))],
        },
        RetryCase {
            name: "retries exhausted: dead with the error",
            seed: |_| St::default().task("a", running(3, 4)).active("a", FAR),
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Dead],
            want: |_| {
                St::default()
                    .task("a", buried(running(3, 4), "boom"))
                    .dead("a", W::Now(0))
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "delay None: dead even with retries left",
            seed: |_| St::default().task("a", running(3, 1)).active("a", FAR),
            items: vec![("a", 3, "fatal", None)],
            reply: vec![Outcome::Dead],
            want: |_| {
                St::default()
                    .task("a", buried(running(3, 1), "fatal"))
                    .dead("a", W::Now(0))
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "stale token: -1, nothing changes",
            seed: |_| St::default().task("a", running(3, 1)).active("a", FAR),
            items: vec![("a", 2, "boom", Some(5000))],
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(3, 1)).active("a", FAR),
            msgs: vec![],
        },
        RetryCase {
            name: "not running (reaped back to ready): -1, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", reaped())
                    .ready("a", ready_score(5, 1000))
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", reaped())
                    .ready("a", ready_score(5, 1000))
            },
            msgs: vec![],
        },
        RetryCase {
            name: "retried call after a lost reply (same token, same error): 1, nothing changes",
            seed: |_| {
                St::default()
                    .task(
                        "a",
                        rescheduled(running(3, 1), "boom", 5000).with("run_at", FAR),
                    )
                    .sched("a", FAR)
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task(
                        "a",
                        rescheduled(running(3, 1), "boom", 5000).with("run_at", FAR),
                    )
                    .sched("a", FAR)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "retried call after a lost reply, task buried: 2, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", buried(running(3, 4), "boom").with("finished_at", 990))
                    .dead("a", 990)
            },
            items: vec![("a", 3, "boom", None)],
            reply: vec![Outcome::Dead],
            want: |_| {
                St::default()
                    .task("a", buried(running(3, 4), "boom").with("finished_at", 990))
                    .dead("a", 990)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "mixed batch behind an earlier head: no s: message, both counters",
            seed: |_| {
                St::default()
                    .task("x", at("scheduled", 5, 1000))
                    .task("a", running(3, 1))
                    .task("b", running(1, 4))
                    .sched("x", 1000)
                    .active("a", FAR)
                    .active("b", FAR)
            },
            items: vec![("a", 3, "boom", Some(5000)), ("b", 1, "bang", Some(5000))],
            reply: vec![Outcome::Done, Outcome::Dead],
            want: |_| {
                St::default()
                    .task("x", at("scheduled", 5, 1000))
                    .task("a", rescheduled(running(3, 1), "boom", 5000))
                    .task("b", buried(running(1, 4), "bang"))
                    .sched("x", 1000)
                    .sched("a", W::Now(5000))
                    .dead("b", W::Now(0))
                    .stat("retried", 1)
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("rty{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.retry(p, &case.items).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// reap
// ---------------------------------------------------------------------------------------------

struct ReapCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    requeued: u64,
    buried: u64,
    next_deadline: Option<i64>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// reap sends expired leases with attempts left back to ready (error "lease expired"), buries
/// those without, leaves unexpired leases alone, honours the batch, only unlists tasks no longer
/// running, and replies with the next lease deadline.
#[tokio::test]
async fn reap_transitions() {
    let cases = [
        ReapCase {
            name: "expired with attempts left: back to ready; unexpired untouched",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1).with("priority", 4))
                    .task("b", running(1, 1))
                    .active("a", 1000)
                    .active("b", FAR)
            },
            batch: 100,
            requeued: 1,
            buried: 0,
            next_deadline: Some(FAR),
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("priority", 4)
                            .with("state", "ready")
                            .with("lost", 1)
                            .with("error", "lease expired: worker lost during attempt 1")
                            .without("worker"),
                    )
                    .task("b", running(1, 1))
                    .ready("a", W::Now(ready_score(4, 0)))
                    .active("b", FAR)
                    .stat("reaped", 1)
            },
            msgs: vec![M::R],
        },
        ReapCase {
            name: "handler retries used up but no lease lost before: back to ready, lost 1",
            seed: |_| St::default().task("a", running(2, 4)).active("a", 1000),
            batch: 100,
            requeued: 1,
            buried: 0,
            next_deadline: None,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 4)
                            .with("state", "ready")
                            .with("lost", 1)
                            .with("error", "lease expired: worker lost during attempt 4")
                            .without("worker"),
                    )
                    .ready("a", W::Now(ready_score(5, 0)))
                    .stat("reaped", 1)
            },
            msgs: vec![M::R],
        },
        ReapCase {
            name: "lost == max_lost before this expiry: dead, the reason names the lost leases",
            seed: |_| {
                St::default()
                    .task("a", running(2, 3).with("lost", 2))
                    .active("a", 1000)
            },
            batch: 100,
            requeued: 0,
            buried: 1,
            next_deadline: None,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 3)
                            .with("lost", 3)
                            .with("state", "dead")
                            .with("finished_at", W::Now(0))
                            .with(
                                "error",
                                "lease expired 3 times: worker lost during 3 of 3 attempts \
                                 (max_lost_leases = 2)",
                            )
                            .without("worker"),
                    )
                    .dead("a", W::Now(0))
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
        ReapCase {
            name: "only unexpired leases: nothing changes",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            batch: 100,
            requeued: 0,
            buried: 0,
            next_deadline: Some(FAR),
            want: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            msgs: vec![],
        },
        ReapCase {
            name: "batch limit: earliest deadlines first, next deadline already past",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("a", running(1, 1))
                    .task("b", running(1, 1))
                    .task("c", running(1, 1))
                    .task("x", ready_task(9, 1))
                    .ready("x", ready_score(9, 1))
                    .active("a", 1000)
                    .active("b", 2000)
                    .active("c", 3000)
            },
            batch: 2,
            requeued: 2,
            buried: 0,
            next_deadline: Some(3000),
            want: |_| {
                let lost = |r: Rec| {
                    r.with("state", "ready")
                        .with("lost", 1)
                        .with("error", "lease expired: worker lost during attempt 1")
                        .without("worker")
                };
                St::default()
                    .drained("0")
                    .task("a", lost(running(1, 1)))
                    .task("b", lost(running(1, 1)))
                    .task("c", running(1, 1))
                    .task("x", ready_task(9, 1))
                    .ready("x", ready_score(9, 1))
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("b", W::Now(ready_score(5, 0)))
                    .active("c", 3000)
                    .stat("reaped", 2)
            },
            // The workers are still claiming (drained 0).
            msgs: vec![],
        },
        ReapCase {
            name: "no longer running (acked, or hash gone): only removed from active",
            seed: |_| {
                St::default()
                    .task("a", succeeded_at())
                    .active("a", 1000)
                    .active("ghost", 1500)
            },
            batch: 100,
            requeued: 0,
            buried: 0,
            next_deadline: None,
            want: |_| St::default().task("a", succeeded_at()),
            msgs: vec![],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("rea{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.reap(p, case.batch, MAX_LOST).await.unwrap()
        })
        .await;
        let r = ran.reply;
        assert_eq!(
            (r.requeued, r.buried, r.next_deadline_ms),
            (case.requeued, case.buried, case.next_deadline),
            "{}: reply",
            case.name
        );
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

/// A task that succeeded at 990 (seed value).
fn succeeded_at() -> Rec {
    running(2, 1)
        .with("state", "succeeded")
        .with("finished_at", 990)
}

// ---------------------------------------------------------------------------------------------
// extend
// ---------------------------------------------------------------------------------------------

struct ExtendCase {
    name: &'static str,
    seed: fn(&str) -> St,
    lease: u64,
    items: Vec<(&'static str, i64)>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
}

/// extend sets the lease deadline to now + lease only for a running task with the matching
/// token; anything else replies -1 and changes nothing.
#[tokio::test]
async fn extend_transitions() {
    let cases = [
        ExtendCase {
            name: "matching token: deadline renewed",
            seed: |_| St::default().task("a", running(2, 1)).active("a", 9000),
            lease: 20_000,
            items: vec![("a", 2)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .active("a", W::Now(20_000))
            },
        },
        ExtendCase {
            name: "stale token: -1, deadline unchanged",
            seed: |_| St::default().task("a", running(2, 1)).active("a", 9000),
            lease: 20_000,
            items: vec![("a", 1)],
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(2, 1)).active("a", 9000),
        },
        ExtendCase {
            name: "not running: -1, not added to active",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
            lease: 20_000,
            items: vec![("a", 2)],
            reply: vec![Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
        },
        ExtendCase {
            name: "mixed batch: only the matching token renewed",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .task("b", running(7, 1))
                    .active("a", 9000)
                    .active("b", 9500)
            },
            lease: 20_000,
            items: vec![("a", 2), ("b", 6)],
            reply: vec![Outcome::Done, Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .task("b", running(7, 1))
                    .active("b", 9500)
                    .active("a", W::Now(20_000))
            },
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("ext{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.extend(p, case.lease, &case.items).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &[], ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// release
// ---------------------------------------------------------------------------------------------

struct ReleaseCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<(&'static str, i64)>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// release hands a running task with the matching token back to ready at once, without counting
/// the attempt, out of the active set; a stale token replies -1 and changes nothing.
#[tokio::test]
async fn release_transitions() {
    let cases = [
        ReleaseCase {
            name: "matching token: back to ready, attempts - 1, out of active",
            seed: |_| {
                St::default()
                    .task("a", running(3, 2).with("priority", 6))
                    .active("a", FAR)
            },
            items: vec![("a", 3)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(3, 1)
                            .with("priority", 6)
                            .with("state", "ready")
                            .without("worker"),
                    )
                    .ready("a", W::Now(ready_score(6, 0)))
            },
            msgs: vec![M::R],
        },
        ReleaseCase {
            name: "stale token: -1, nothing changes",
            seed: |_| St::default().task("a", running(3, 2)).active("a", FAR),
            items: vec![("a", 2)],
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(3, 2)).active("a", FAR),
            msgs: vec![],
        },
        ReleaseCase {
            name: "ready set not empty: no r: message",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", ready_task(5, 1))
                    .task("a", running(1, 1))
                    .ready("x", ready_score(5, 1))
                    .active("a", FAR)
            },
            items: vec![("a", 1)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", ready_task(5, 1))
                    .task("a", running(1, 0).with("state", "ready").without("worker"))
                    .ready("x", ready_score(5, 1))
                    .ready("a", W::Now(ready_score(5, 0)))
            },
            msgs: vec![],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("rel{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.release(p, &case.items).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// release_claim
// ---------------------------------------------------------------------------------------------

struct ReleaseClaimCase {
    name: &'static str,
    seed: fn(&str) -> St,
    tag: &'static str,
    reply: u64,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// release_claim hands back exactly the running tasks whose `worker` is the lost claim's tag
/// (attempts - 1, token kept, out of active, into ready); tasks of other claims, expired leases
/// and tasks no longer running are left alone.
#[tokio::test]
async fn release_claim_transitions() {
    let cases = [
        ReleaseClaimCase {
            name: "the tag's running tasks go back; another claim's task stays",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task(
                        "b",
                        running(2, 2).with("worker", "w1#7").with("priority", 8),
                    )
                    .task("c", running(5, 1).with("worker", "w1#8"))
                    .active("a", FAR)
                    .active("b", FAR)
                    .active("c", FAR)
            },
            tag: "w1#7",
            reply: 2,
            want: |_| {
                St::default()
                    .task("a", running(3, 0).with("state", "ready").without("worker"))
                    .task(
                        "b",
                        running(2, 1)
                            .with("priority", 8)
                            .with("state", "ready")
                            .without("worker"),
                    )
                    .task("c", running(5, 1).with("worker", "w1#8"))
                    .active("c", FAR)
                    .ready("b", W::Now(ready_score(8, 0)))
                    .ready("a", W::Now(ready_score(5, 0)))
            },
            msgs: vec![M::R],
        },
        ReleaseClaimCase {
            name: "an expired lease is the reaper's; a finished task is left; nothing to do: 0",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task("b", succeeded_at().with("worker", "w1#7"))
                    .active("a", 500)
            },
            tag: "w1#7",
            reply: 0,
            want: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task("b", succeeded_at().with("worker", "w1#7"))
                    .active("a", 500)
            },
            msgs: vec![],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("relc{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.release_claim(p, case.tag, 100).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// cancel
// ---------------------------------------------------------------------------------------------

struct CancelCase {
    name: &'static str,
    seed: fn(&str) -> St,
    ttl: u64,
    reply: CancelReply,
    want: fn(&str) -> St,
}

/// cancel withdraws a scheduled or ready task (state cancelled with a TTL, or deleted with TTL 0,
/// counted), leaves a running task alone (Running), a finished one alone (Finished), and reports
/// a missing one (NotFound).
#[tokio::test]
async fn cancel_transitions() {
    let cases = [
        CancelCase {
            name: "scheduled: cancelled, expires after the TTL",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            ttl: 60_000,
            reply: CancelReply::Cancelled,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        at("cancelled", 5, FAR).with("finished_at", W::Now(0)),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelCase {
            name: "ready: cancelled, expires after the TTL",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000))
                    .ready("a", ready_score(5, 1000))
            },
            ttl: 60_000,
            reply: CancelReply::Cancelled,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        ready_task(5, 1000)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0)),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelCase {
            name: "ready with TTL 0: deleted",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000))
                    .ready("a", ready_score(5, 1000))
                    .stat("cancelled", 2)
            },
            ttl: 0,
            reply: CancelReply::Cancelled,
            want: |_| St::default().stat("cancelled", 3),
        },
        CancelCase {
            name: "running: Running, nothing changes",
            seed: |_| St::default().task("a", running(1, 1)).active("a", FAR),
            ttl: 60_000,
            reply: CancelReply::Running,
            want: |_| St::default().task("a", running(1, 1)).active("a", FAR),
        },
        CancelCase {
            name: "succeeded: Finished, nothing changes",
            seed: |_| St::default().task("a", succeeded_at()),
            ttl: 60_000,
            reply: CancelReply::Finished,
            want: |_| St::default().task("a", succeeded_at()),
        },
        CancelCase {
            name: "dead: Finished, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", Rec::new("dead").with("finished_at", 990))
                    .dead("a", 990)
            },
            ttl: 60_000,
            reply: CancelReply::Finished,
            want: |_| {
                St::default()
                    .task("a", Rec::new("dead").with("finished_at", 990))
                    .dead("a", 990)
            },
        },
        CancelCase {
            name: "cancelled before: Finished, nothing changes",
            seed: |_| St::default().task("a", Rec::new("cancelled").with("finished_at", 990)),
            ttl: 60_000,
            reply: CancelReply::Finished,
            want: |_| St::default().task("a", Rec::new("cancelled").with("finished_at", 990)),
        },
        CancelCase {
            name: "missing: NotFound, nothing created",
            seed: |_| St::default(),
            ttl: 60_000,
            reply: CancelReply::NotFound,
            want: |_| St::default(),
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("cnl{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.cancel(p, "a", case.ttl).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &[], ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// promoter lock
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum LockCall {
    Acquire(&'static str, u64),
    Renew(&'static str, u64),
    Release(&'static str),
}

struct LockCase {
    name: &'static str,
    /// Holder and TTL (ms) of the lock before the call.
    seed: Option<(&'static str, u64)>,
    call: LockCall,
    reply: bool,
    /// Holder after the call and the TTL (ms) it was last given.
    want: Option<(&'static str, i64)>,
}

/// The promoter lock is taken only when free (SET NX PX), and renewed or released only by the
/// token that holds it.
#[tokio::test]
async fn lock_transitions() {
    use LockCall::{Acquire, Release, Renew};
    let cases = [
        LockCase {
            name: "acquire a free lock",
            seed: None,
            call: Acquire("A", 5000),
            reply: true,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "acquire a lock held by another: refused",
            seed: Some(("A", 5000)),
            call: Acquire("B", 9000),
            reply: false,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "renew our lock: new TTL",
            seed: Some(("A", 5000)),
            call: Renew("A", 20_000),
            reply: true,
            want: Some(("A", 20_000)),
        },
        LockCase {
            name: "renew another's lock: refused, TTL unchanged",
            seed: Some(("A", 5000)),
            call: Renew("B", 20_000),
            reply: false,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "renew an expired lock: refused, not recreated",
            seed: None,
            call: Renew("A", 20_000),
            reply: false,
            want: None,
        },
        LockCase {
            name: "release our lock: deleted",
            seed: Some(("A", 5000)),
            call: Release("A"),
            reply: true,
            want: None,
        },
        LockCase {
            name: "release another's lock: refused, kept",
            seed: Some(("A", 5000)),
            call: Release("B"),
            reply: false,
            want: Some(("A", 5000)),
        },
    ];
    let fx = fx().await;
    let mut conn = fx.server.conn();
    for (i, case) in cases.iter().enumerate() {
        let p = fx.store.partition(&format!("lck{i}"), SHARD);
        if let Some((holder, ttl)) = case.seed {
            let _: () = redis::cmd("SET")
                .arg(p.keys.lock())
                .arg(holder)
                .arg("PX")
                .arg(ttl)
                .query(&mut conn)
                .unwrap();
        }
        let got = match case.call {
            Acquire(tok, ttl) => fx.store.lock_acquire(&p, tok, ttl).await,
            Renew(tok, ttl) => fx.store.lock_renew(&p, tok, ttl).await,
            Release(tok) => fx.store.lock_release(&p, tok).await,
        }
        .unwrap();
        assert_eq!(got, case.reply, "{}: reply", case.name);
        let holder: Option<String> = redis::cmd("GET")
            .arg(p.keys.lock())
            .query(&mut conn)
            .unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(p.keys.lock())
            .query(&mut conn)
            .unwrap();
        match case.want {
            None => {
                assert_eq!(holder, None, "{}: holder", case.name);
                assert_eq!(pttl, -2, "{}: PTTL", case.name);
            }
            Some((want, ttl)) => {
                assert_eq!(holder.as_deref(), Some(want), "{}: holder", case.name);
                assert!(
                    pttl <= ttl && pttl > ttl - 2000,
                    "{}: PTTL {pttl}, want about {ttl}",
                    case.name
                );
            }
        }
        let want_keys: BTreeSet<String> = case.want.iter().map(|_| p.keys.lock()).collect();
        assert_eq!(
            partition_keys(&mut conn, &p),
            want_keys,
            "{}: keys",
            case.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// fencing, end to end
// ---------------------------------------------------------------------------------------------

/// Fencing across scripts: a worker whose lease expired and was reaped cannot acknowledge once
/// the task is claimed again; its token (1) is rejected everywhere, the new holder's (2) works.
#[tokio::test]
async fn fencing_rejects_the_lost_workers_token() {
    let fx = fx().await;
    let p = fx.store.partition("fence", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    s.enqueue(&p, &[new_task("a", Due::Delay(0), 5)])
        .await
        .unwrap();

    let first = s.claim(&p, 10, 30, "w1").await.unwrap();
    assert_eq!(first.tasks.len(), 1);
    assert_eq!((first.tasks[0].token, first.tasks[0].attempt), (1, 1));

    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = s.reap(&p, 100, MAX_LOST).await.unwrap();
    assert_eq!((r.requeued, r.buried, r.next_deadline_ms), (1, 0, None));

    // Between reap and the next claim the task is `ready`: token 1 is already refused.
    assert_eq!(
        s.extend(&p, 30_000, &[("a", 1)]).await.unwrap(),
        vec![Outcome::StaleLease]
    );

    let second = s.claim(&p, 10, 30_000, "w2").await.unwrap();
    assert_eq!(second.tasks.len(), 1);
    assert_eq!((second.tasks[0].token, second.tasks[0].attempt), (2, 2));

    let stale = [("a", 1, &b"late"[..])];
    assert_eq!(
        s.ack_many(&[(&p, stale.to_vec())], 60_000).await.unwrap(),
        vec![vec![Outcome::StaleLease]]
    );
    assert_eq!(
        s.retry(&p, &[("a", 1, "late", Some(0))]).await.unwrap(),
        vec![Outcome::StaleLease]
    );
    assert_eq!(
        s.release(&p, &[("a", 1)]).await.unwrap(),
        vec![Outcome::StaleLease]
    );
    let state: (String, String, String) = redis::cmd("HMGET")
        .arg(p.keys.task("a"))
        .arg("state")
        .arg("token")
        .arg("worker")
        .query(&mut conn)
        .unwrap();
    assert_eq!(state, ("running".into(), "2".into(), "w2".into()));

    let t0 = server_ms(&mut conn);
    let fresh = [("a", 2, &b"ok"[..])];
    assert_eq!(
        s.ack_many(&[(&p, fresh.to_vec())], 60_000).await.unwrap(),
        vec![vec![Outcome::Done]]
    );
    let c = Clock {
        t0,
        t1: server_ms(&mut conn),
    };
    let want = St::default()
        .task_ttl(
            "a",
            enqueued("succeeded", 5, W::I(first.tasks[0].due_ms))
                .with("enqueued_at", first.tasks[0].due_ms)
                .with("token", 2)
                .with("attempts", 2)
                .with("lost", 1)
                .with("started_at", second.server_now_ms)
                .with("worker", "w2")
                .with("error", "lease expired: worker lost during attempt 1")
                .with("result", "ok")
                .with("finished_at", W::Now(0)),
            60_000,
        )
        .stat("enqueued", 1)
        .stat("reaped", 1)
        .stat("succeeded", 1);
    assert_state(&mut conn, &p, &want, c, "after the ack with token 2");
}

// ---------------------------------------------------------------------------------------------
// batch sizes
// ---------------------------------------------------------------------------------------------

/// Seeds `n` tasks `t00000`.. in state `state` into sorted set `zset` with score 1000, pipelined.
fn seed_many(
    conn: &mut Connection,
    p: &Partition,
    n: usize,
    state: &str,
    zset: &str,
) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HSET")
            .arg(p.keys.task(id))
            .arg("state")
            .arg(state)
            .arg("priority")
            .arg(5)
            .arg("run_at")
            .arg(1000)
            .arg("attempts")
            .arg(1)
            .arg("max_retries")
            .arg(3)
            .arg("token")
            .arg(1)
            .ignore();
        pipe.cmd("ZADD").arg(zset).arg(1000).arg(id).ignore();
    }
    pipe.query::<()>(conn).unwrap();
    ids
}

/// Batches of 10,000 never fail and never leave a task in two sets: promote and reap take at most
/// `MAX_BATCH` per call, ack takes them all. (Lua's `unpack` is limited to about 8,000 values;
/// the scripts remove members in chunks.)
#[tokio::test]
async fn batches_beyond_the_lua_unpack_limit() {
    const N: usize = 10_000;
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let mut outcomes = Vec::new();
    // What a failed call left behind: Redis does not roll back a script's writes before an error.
    let card = |conn: &mut Connection, key: String| -> usize {
        redis::cmd("ZCARD").arg(key).query(conn).unwrap()
    };

    let p = fx.store.partition("big-promote", SHARD);
    seed_many(&mut conn, &p, N, "scheduled", &p.keys.scheduled());
    let r = fx.store.promote(&p, N as u32).await;
    outcomes.push((
        "promote.lua",
        r.map(|r| r.moved).map_err(|e| e.to_string()),
        format!(
            "scheduled {} ready {}",
            card(&mut conn, p.keys.scheduled()),
            card(&mut conn, p.keys.ready())
        ),
    ));

    let p = fx.store.partition("big-reap", SHARD);
    seed_many(&mut conn, &p, N, "running", &p.keys.active());
    let r = fx.store.reap(&p, N as u32, MAX_LOST).await;
    outcomes.push((
        "reap.lua",
        r.map(|r| r.requeued).map_err(|e| e.to_string()),
        format!(
            "active {} ready {}",
            card(&mut conn, p.keys.active()),
            card(&mut conn, p.keys.ready())
        ),
    ));

    let p = fx.store.partition("big-ack", SHARD);
    let ids = seed_many(&mut conn, &p, N, "running", &p.keys.active());
    let items: Vec<AckItem<'_>> = ids.iter().map(|id| (id.as_str(), 1, &b""[..])).collect();
    let r = fx.store.ack_many(&[(&p, items)], 0).await;
    let keys = partition_keys(&mut conn, &p).len();
    outcomes.push((
        "ack.lua",
        r.map(|v| v[0].iter().filter(|o| **o == Outcome::Done).count() as u64)
            .map_err(|e| e.to_string()),
        format!("active {} keys {keys}", card(&mut conn, p.keys.active())),
    ));

    // Promote and reap take at most MAX_BATCH per call (the caller loops); ack takes what it is
    // given. Either way no call fails and no task is left in two sets.
    let cap = MAX_BATCH as u64;
    let rest = N as u64 - cap;
    let want = [
        (
            "promote.lua",
            Ok(cap),
            format!("scheduled {rest} ready {cap}"),
        ),
        ("reap.lua", Ok(cap), format!("active {rest} ready {cap}")),
        ("ack.lua", Ok(N as u64), "active 0 keys 1".to_owned()),
    ];
    assert_eq!(outcomes, want, "batches of {N}");
}

/// trim_dead deletes dead tasks past the age limit, then the oldest beyond the length limit, at
/// most a batch per call, hash and dead-set entry together; newer dead tasks are untouched.
#[tokio::test]
async fn trim_dead_enforces_age_and_length() {
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let p = fx.store.partition("trim", SHARD);
    let now = server_ms(&mut conn);
    // Ten dead tasks: d0..d3 died an hour ago, d4..d9 died 1..6 ms ago (d4 oldest).
    let mut pipe = redis::pipe();
    for i in 0..10i64 {
        let id = format!("d{i}");
        let died = if i < 4 {
            now - 3_600_000 - i
        } else {
            now - (10 - i)
        };
        pipe.hset(p.keys.task(&id), "state", "dead").ignore();
        pipe.zadd(p.keys.dead(), &id, died).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let dead = |conn: &mut Connection| -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(p.keys.dead())
            .arg(0)
            .arg(-1)
            .query(conn)
            .unwrap()
    };
    let exists = |conn: &mut Connection, id: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(p.keys.task(id))
            .query(conn)
            .unwrap()
    };

    // Batch 3: only three of the four too-old tasks go, oldest first.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 100, 3).await.unwrap(), 3);
    assert_eq!(dead(&mut conn).len(), 7);
    assert!(!exists(&mut conn, "d3") && !exists(&mut conn, "d2") && !exists(&mut conn, "d1"));
    assert!(exists(&mut conn, "d0"));

    // The last old one, then the oldest beyond a length of 4: d0, then d4 and d5.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 4, 100).await.unwrap(), 3);
    assert_eq!(dead(&mut conn), vec!["d6", "d7", "d8", "d9"]);
    for id in ["d0", "d4", "d5"] {
        assert!(!exists(&mut conn, id), "{id}");
    }
    for id in ["d6", "d7", "d8", "d9"] {
        assert!(exists(&mut conn, id), "{id}");
    }

    // Within both limits: nothing to do.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 4, 100).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// requeue
// ---------------------------------------------------------------------------------------------

struct RequeueCase {
    name: &'static str,
    seed: fn(&str) -> St,
    ids: Vec<&'static str>,
    reply: Vec<scheduler::scripts::RequeueReply>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

/// A task that died at 990 on its fourth run, with lease token 4.
fn dead_at() -> Rec {
    Rec::new("dead")
        .with("attempts", 4)
        .with("token", 4)
        .with("started_at", 950)
        .with("error", "boom")
        .with("finished_at", 990)
}

/// What requeue makes of [`dead_at`]: ready now, attempts 0, error and token kept.
fn requeued() -> Rec {
    dead_at()
        .with("state", "ready")
        .with("attempts", 0)
        .with("run_at", W::Now(0))
        .without("finished_at")
}

/// requeue moves a dead task to the ready set (attempts 0, due now, error and token kept,
/// `requeued` counted, `r:` when the ready set was empty), refuses a task that is not dead with
/// no change, and drops the leftover id of a deleted task from the dead set.
#[tokio::test]
async fn requeue_transitions() {
    use scheduler::scripts::RequeueReply::{NotDead, NotFound, Requeued};
    let cases = [
        RequeueCase {
            name: "dead: ready now with attempts 0, r: message",
            seed: |_| St::default().task("a", dead_at()).dead("a", 990),
            ids: vec!["a"],
            reply: vec![Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .ready("a", W::Now(ready_score(5, 0)))
                    .stat("requeued", 1)
            },
            msgs: vec![M::R],
        },
        RequeueCase {
            name: "ready set already non-empty: no r: message, counter adds up",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", dead_at().with("priority", 9))
                    .ready("x", ready_score(5, 5))
                    .dead("a", 990)
                    .stat("requeued", 2)
            },
            ids: vec!["a"],
            reply: vec![Requeued],
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", requeued().with("priority", 9))
                    .ready("a", W::Now(ready_score(9, 0)))
                    .ready("x", ready_score(5, 5))
                    .stat("requeued", 3)
            },
            msgs: vec![],
        },
        RequeueCase {
            name: "scheduled: NotDead, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            msgs: vec![],
        },
        RequeueCase {
            name: "running: NotDead, nothing changes",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            msgs: vec![],
        },
        RequeueCase {
            name: "succeeded: NotDead, record and TTL untouched",
            seed: |_| St::default().task_ttl("a", succeeded_at(), 60_000),
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| St::default().task_ttl("a", succeeded_at(), 60_000),
            msgs: vec![],
        },
        RequeueCase {
            name: "id in the dead set without a record: NotFound, id dropped",
            seed: |_| St::default().dead("a", 990),
            ids: vec!["a"],
            reply: vec![NotFound],
            want: |_| St::default(),
            msgs: vec![],
        },
        RequeueCase {
            name: "missing: NotFound, nothing created",
            seed: |_| St::default(),
            ids: vec!["a"],
            reply: vec![NotFound],
            want: |_| St::default(),
            msgs: vec![],
        },
        RequeueCase {
            name: "mixed batch: one reply per id, one r: message",
            seed: |_| {
                St::default()
                    .task("a", dead_at())
                    .task("b", at("ready", 5, 5))
                    .task("d", dead_at())
                    .ready("b", ready_score(5, 5))
                    .dead("a", 990)
                    .dead("d", 995)
            },
            ids: vec!["a", "b", "c", "d"],
            reply: vec![Requeued, NotDead, NotFound, Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .task("b", at("ready", 5, 5))
                    .task("d", requeued())
                    .ready("b", ready_score(5, 5))
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("d", W::Now(ready_score(5, 0)))
                    .stat("requeued", 2)
                    .drained("0")
            },
            // No drained flag yet: the workers may not be looking, so they are woken.
            msgs: vec![M::R],
        },
        RequeueCase {
            name: "empty ready set, two requeued: a single r: message",
            seed: |_| {
                St::default()
                    .task("a", dead_at())
                    .task("b", dead_at())
                    .dead("a", 990)
                    .dead("b", 991)
            },
            ids: vec!["a", "b"],
            reply: vec![Requeued, Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .task("b", requeued())
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("b", W::Now(ready_score(5, 0)))
                    .stat("requeued", 2)
            },
            msgs: vec![M::R],
        },
    ];
    let fx = fx().await;
    for (i, case) in cases.iter().enumerate() {
        let q = format!("rqu{i}");
        let ran = run(&fx, &q, &(case.seed)(&q), async |s, p| {
            s.requeue(p, &case.ids).await.unwrap()
        })
        .await;
        assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        let mut conn = fx.server.conn();
        assert_state(&mut conn, &ran.p, &(case.want)(&q), ran.clock, case.name);
        assert_msgs(&ran.msgs, &case.msgs, ran.clock, case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// binary values in 64-byte pieces
// ---------------------------------------------------------------------------------------------

/// Args and results longer than 64 bytes are stored in pieces (`args`, `args:1`, ...) so the task
/// hash stays a compact listpack; claim, status and result see them whole, at every length
/// around the piece boundaries.
#[tokio::test]
async fn long_args_and_results_are_stored_in_pieces() {
    let fx = fx().await;
    let p = fx.store.partition("blob", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    for len in [0usize, 1, 63, 64, 65, 128, 129, 1000] {
        let id = format!("t{len}");
        let args: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut t = new_task(&id, Due::Delay(0), 5);
        t.args = args.clone();
        s.enqueue(&p, &[t]).await.unwrap();

        let key = p.keys.task(&id);
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
        let pieces = fields.keys().filter(|f| f.starts_with("args")).count();
        assert_eq!(pieces, len.div_ceil(64), "len {len}: pieces {fields:?}");
        assert!(
            fields.values().all(|v| v.len() <= 64),
            "len {len}: a value over 64 bytes"
        );
        let enc: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query(&mut conn)
            .unwrap();
        assert_eq!(enc, "listpack", "len {len}");

        let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
        assert_eq!(claim.tasks.len(), 1, "len {len}");
        assert_eq!(claim.tasks[0].args, args, "len {len}: claimed args");

        let result: Vec<u8> = args.iter().rev().copied().collect();
        let acked = s
            .ack_many(&[(&p, vec![(id.as_str(), 1, &result[..])])], 60_000)
            .await
            .unwrap();
        assert_eq!(acked, vec![vec![Outcome::Done]], "len {len}");
        let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
        assert_eq!(take_blob(&mut fields, "args").unwrap_or_default(), args);
        assert_eq!(take_blob(&mut fields, "result").unwrap_or_default(), result);
        assert!(
            !fields
                .keys()
                .any(|f| f.starts_with("args") || f.starts_with("result")),
            "len {len}: pieces left over: {fields:?}"
        );
    }
}

/// The producer's and worker's default payload cap (`max_payload_bytes`): 1 MiB.
const CAP: usize = 1 << 20;

/// Every size the API accepts works in every script that stores or reads a blob: a bulk enqueue
/// with arguments of exactly the cap between two small tasks creates all three (each in its set),
/// claim hands the arguments back whole, and ack stores a result of exactly the cap whole. (Lua's
/// `unpack` fails near 8,000 values: an unchunked `HSET` of 64-byte pieces failed beyond ~255 kB
/// and left the tasks written before it in no set.)
#[tokio::test]
async fn payloads_at_the_cap_pass_every_script() {
    let fx = fx().await;
    let p = fx.store.partition("cap", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let big: Vec<u8> = (0..CAP).map(|i| (i * 7 % 251) as u8).collect();
    let mut b = new_task("b", Due::Delay(0), 5);
    b.args = big.clone();
    let tasks = [
        new_task("a", Due::Delay(0), 9),
        b,
        new_task("c", Due::Delay(0), 1),
    ];
    let reply = s.enqueue(&p, &tasks).await.unwrap();
    assert_eq!(reply, vec![Outcome::Done; 3]);
    let ready: Vec<String> = conn.zrange(p.keys.ready(), 0, -1).unwrap();
    assert_eq!(ready, ["a", "b", "c"]);

    let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
    let ids: Vec<&str> = claim.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(claim.tasks[1].args, big, "claimed args whole");

    let result: Vec<u8> = big.iter().rev().copied().collect();
    let acked = s
        .ack_many(
            &[(
                &p,
                vec![("a", 1, &result[..]), ("b", 1, &result[..]), ("c", 1, &[])],
            )],
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(acked, vec![vec![Outcome::Done; 3]]);
    for id in ["a", "b"] {
        let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task(id)).unwrap();
        assert_eq!(
            fields.get("state").map(Vec::as_slice),
            Some(&b"succeeded"[..])
        );
        assert!(
            take_blob(&mut fields, "result") == Some(result.clone()),
            "{id}: result whole"
        );
    }
    let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("b")).unwrap();
    assert!(take_blob(&mut fields, "args") == Some(big), "b: args whole");
}

/// `enqueue.lua` as the store loads it, to call it with values the typed wrapper cannot produce.
fn raw_enqueue() -> redis::Script {
    redis::Script::new(&scheduler::scripts::with_prelude(include_str!(
        "../lua/enqueue.lua"
    )))
}

/// enqueue checks every value of a task before its first write: a task with an empty id, a
/// delay, run-at, retry count, timeout or priority that is not a decimal integer in range is
/// refused alone (-2, nothing written), and the tasks around it are created as usual.
#[tokio::test]
async fn enqueue_refuses_a_bad_task_alone() {
    let fx = fx().await;
    let p = fx.store.partition("enqbad", SHARD);
    let mut conn = fx.server.conn();
    let c0 = server_ms(&mut conn);
    let good = |id: &str| {
        vec![
            id.to_owned(),
            "job".into(),
            "\u{91}*".into(),
            "0".into(),
            "0".into(),
            "3".into(),
            "30000".into(),
            "5".into(),
        ]
    };
    let bad = |id: &str, at: usize, v: &str| {
        let mut t = good(id);
        t[at] = v.to_owned();
        t
    };
    let tasks = [
        good("a"),
        bad("b", 3, "abc"),
        bad("c", 3, "-5"),
        bad("d", 4, "nan"),
        bad("e", 5, "-1"),
        bad("f", 6, "1e-3"),
        bad("g", 7, "12"),
        bad("h", 7, "2.5"),
        bad("", 0, ""),
        good("z"),
    ];
    let script = raw_enqueue();
    let mut inv = script.prepare_invoke();
    inv.key(p.keys.scheduled())
        .key(p.keys.ready())
        .key(p.keys.stats())
        .key(p.keys.drained())
        .arg(p.keys.task_prefix())
        .arg(&p.channel)
        .arg(SHARD);
    for v in tasks.iter().flatten() {
        inv.arg(v);
    }
    let reply: Vec<i64> = inv.invoke(&mut conn).unwrap();
    assert_eq!(reply, [1, -2, -2, -2, -2, -2, -2, -2, -2, 1]);
    let c = Clock {
        t0: c0,
        t1: server_ms(&mut conn),
    };
    let rec = || {
        Rec::new("ready")
            .with("run_at", W::Now(0))
            .with("enqueued_at", W::Now(0))
            .with("args", "\u{91}*")
    };
    let want = St::default()
        .task("a", rec())
        .task("z", rec())
        .ready("a", W::Now(ready_score(5, 0)))
        .ready("z", W::Now(ready_score(5, 0)))
        .stat("enqueued", 2);
    assert_state(&mut conn, &p, &want, c, "bad tasks refused alone");
}

// ---------------------------------------------------------------------------------------------
// records that cannot be read, stray ids, wake-ups (issue 9, point 5)
// ---------------------------------------------------------------------------------------------

/// What a script makes of a record it cannot read: dead now with the reason.
fn corrupt(rec: Rec, why: &str) -> Rec {
    rec.with("state", "dead")
        .with("finished_at", W::Now(0))
        .with("error", format!("corrupt record: {why}").as_str())
        .without("worker")
}

/// A stray id in the ready set (no task hash) no longer masks wake-ups: the scripts that add to
/// the ready set publish `r:` whenever the last claim found the set empty (drained flag `1`) or
/// no claim ran yet (no flag), whatever the set holds, and stay quiet only while the workers
/// are still claiming (their last claim got a full batch: flag `0`).
#[tokio::test]
async fn a_stray_ready_member_does_not_mask_wake_ups() {
    let fx = fx().await;
    let q = "stray";
    // Before: `ZCARD ready == 0` was false because of the stray, so no message.
    let seed = St::default().ready("ghost", 1).drained("1");
    let ran = run(&fx, q, &seed, async |s, p| {
        s.enqueue(p, &[new_task("a", Due::Delay(0), 5)])
            .await
            .unwrap()
    })
    .await;
    assert_msgs(
        &ran.msgs,
        &[M::R],
        ran.clock,
        "enqueue behind a stray, drained",
    );

    // The claim pops the stray (reported as corrupt) and the task, and finds the set empty.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.claim(p, 10, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.popped, ran.reply.corrupt), (2, 1));
    assert_eq!(ran.reply.tasks.len(), 1);
    let mut conn = fx.server.conn();
    let flag: String = conn.get(ran.p.keys.drained()).unwrap();
    assert_eq!(flag, "1", "a short claim marks the partition drained");

    // Every script that adds to the ready set wakes the workers once, then stays quiet.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.enqueue(
            p,
            &[
                new_task("b", Due::Delay(0), 5),
                new_task("c", Due::Delay(0), 5),
            ],
        )
        .await
        .unwrap()
    })
    .await;
    assert_msgs(&ran.msgs, &[M::R], ran.clock, "enqueue after a short claim");
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.enqueue(p, &[new_task("d", Due::Delay(0), 5)])
            .await
            .unwrap()
    })
    .await;
    assert_msgs(&ran.msgs, &[], ran.clock, "second enqueue: already woken");

    // A full batch leaves the flag at 0: the workers keep claiming without a message.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.claim(p, 1, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!(ran.reply.popped, 1);
    let flag: String = conn.get(ran.p.keys.drained()).unwrap();
    assert_eq!(flag, "0", "a full claim leaves the flag");
}

/// Records that cannot be read (a field deleted or overwritten by hand) are handled one by one:
/// each goes to the dead set with a reason naming the field (or is repaired), the reply counts
/// it, no script fails, and the other tasks of the call move as usual. Found by fault injection:
/// reap failed on every call once one `attempts` was `abc`; retry took a task without
/// `max_retries` out of the active set and then failed (`running` in no set); promote dropped a
/// task with no `state` without a word.
#[tokio::test]
async fn unreadable_records_are_handled_one_by_one() {
    let fx = fx().await;
    let mut conn = fx.server.conn();

    // promote: no hash, no state, an unknown state, and a good task.
    let seed = St::default()
        .task("nostate", at("scheduled", 5, 1000).without("state"))
        .task("junk", at("scheduled", 5, 1000).with("state", "bogus"))
        .task("ok", at("scheduled", 5, 1000))
        .sched("gone", 1000)
        .sched("nostate", 1000)
        .sched("junk", 1000)
        .sched("ok", 1000);
    let ran = run(&fx, "bad_pro", &seed, async |s, p| {
        s.promote(p, 100).await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.moved, ran.reply.corrupt), (1, 3));
    let want = St::default()
        .task("nostate", corrupt(at("scheduled", 5, 1000), "state absent"))
        .task("junk", corrupt(at("scheduled", 5, 1000), "state \"bogus\""))
        .task("ok", at("ready", 5, 1000))
        .ready("ok", ready_score(5, 1000))
        .dead("junk", W::Now(0))
        .dead("nostate", W::Now(0))
        .stat("promoted", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "promote");

    // claim: an unreadable max_retries, a `nan` token, a missing timeout, no hash, a good task.
    let seed = St::default()
        .task("badmax", ready_task(5, 1000).with("max_retries", "abc"))
        .task("nantok", ready_task(5, 1000).with("token", "nan"))
        .task("notime", ready_task(5, 1000).without("timeout_ms"))
        .task("ok", ready_task(5, 1000))
        .ready("badmax", 1)
        .ready("gone", 2)
        .ready("nantok", 3)
        .ready("notime", 4)
        .ready("ok", 5);
    let ran = run(&fx, "bad_clm", &seed, async |s, p| {
        s.claim(p, 10, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.popped, ran.reply.corrupt), (5, 4));
    let ids: Vec<&str> = ran.reply.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["ok"]);
    let want = St::default()
        .task(
            "badmax",
            corrupt(ready_task(5, 1000), "max_retries \"abc\"").with("max_retries", "abc"),
        )
        .task(
            "nantok",
            corrupt(ready_task(5, 1000), "token \"nan\"").with("token", "nan"),
        )
        .task(
            "notime",
            corrupt(ready_task(5, 1000), "timeout_ms absent").without("timeout_ms"),
        )
        .task("ok", claimed(ready_task(5, 1000), 1, 1))
        .active("ok", W::Now(30_000))
        .dead("badmax", W::Now(0))
        .dead("nantok", W::Now(0))
        .dead("notime", W::Now(0))
        .drained("1");
    assert_state(&mut conn, &ran.p, &want, ran.clock, "claim");

    // reap: `attempts` = `abc` (failed every call before), no hash, and a good expired lease.
    let seed = St::default()
        .task("abc", running(1, 1).with("attempts", "abc"))
        .task("ok", running(1, 1))
        .active("abc", 1000)
        .active("gone", 1000)
        .active("ok", 1000);
    let ran = run(&fx, "bad_rea", &seed, async |s, p| {
        s.reap(p, 100, MAX_LOST).await.unwrap()
    })
    .await;
    let r = ran.reply;
    assert_eq!((r.requeued, r.buried, r.corrupt), (1, 0, 2));
    let want = St::default()
        .task(
            "abc",
            corrupt(running(1, 1), "attempts \"abc\"").with("attempts", "abc"),
        )
        .task(
            "ok",
            running(1, 1)
                .with("state", "ready")
                .with("lost", 1)
                .with("error", "lease expired: worker lost during attempt 1")
                .without("worker"),
        )
        .ready("ok", W::Now(ready_score(5, 0)))
        .dead("abc", W::Now(0))
        .stat("reaped", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "reap");

    // retry: no max_retries and no timeout_ms (left `running` in no set before), next to a good one.
    let bare = || running(3, 1).without("max_retries").without("timeout_ms");
    let seed = St::default()
        .task("bare", bare())
        .task("ok", running(3, 1))
        .active("bare", FAR)
        .active("ok", FAR);
    let ran = run(&fx, "bad_rty", &seed, async |s, p| {
        s.retry(
            p,
            &[("bare", 3, "boom", Some(0)), ("ok", 3, "boom", Some(0))],
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(ran.reply, [Outcome::Corrupt, Outcome::Done]);
    let want = St::default()
        .task(
            "bare",
            corrupt(bare(), "max_retries absent; the run failed: boom"),
        )
        .task("ok", rescheduled(running(3, 1), "boom", 0))
        .sched("ok", W::Now(0))
        .dead("bare", W::Now(0))
        .stat("retried", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "retry");

    // release: an unreadable `attempts` is repaired to 0 (HINCRBY failed on it before).
    let seed = St::default()
        .task("a", running(3, 1).with("attempts", "1e-3"))
        .active("a", FAR);
    let ran = run(&fx, "bad_rel", &seed, async |s, p| {
        s.release(p, &[("a", 3)]).await.unwrap()
    })
    .await;
    assert_eq!(ran.reply, [Outcome::Done]);
    let want = St::default()
        .task("a", running(3, 0).with("state", "ready").without("worker"))
        .ready("a", W::Now(ready_score(5, 0)));
    assert_state(&mut conn, &ran.p, &want, ran.clock, "release");

    // requeue: a member of the dead set whose `state` was deleted is dead by its set: requeued
    // (before, it was dropped from the dead set and left in no set).
    let seed = St::default()
        .task("a", dead_at().without("state"))
        .dead("a", 990);
    let ran = run(&fx, "bad_rqu", &seed, async |s, p| {
        s.requeue(p, &["a"]).await.unwrap()
    })
    .await;
    assert_eq!(ran.reply, [scheduler::scripts::RequeueReply::Requeued]);
    let want = St::default()
        .task("a", requeued())
        .ready("a", W::Now(ready_score(5, 0)))
        .stat("requeued", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "requeue");
}
