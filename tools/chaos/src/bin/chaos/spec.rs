//! The scenarios: the fault each injects, its sizes, settings and expectations, and the list of them.

use crate::*;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    None,
    /// kill -9 a random worker every `every_ms` for `for_ms`.
    KillStorm {
        every_ms: u64,
        for_ms: u64,
    },
    /// SIGSTOP a worker at `at_ms` for `for_ms`, then SIGCONT: worker 0, or with
    /// `lock_holder` the one holding the most promoter locks of the queue's shards then. With
    /// `expect_stale`, the stopped worker must have had runs re-run elsewhere and its late acks
    /// rejected (lease-lost); without, the scenario is about the tasks it had not claimed
    /// (sigstop).
    Stop {
        at_ms: u64,
        for_ms: u64,
        expect_stale: bool,
        lock_holder: bool,
    },
    /// kill -9 redis at `at_ms`, restart after `down_ms`.
    RedisCrash {
        at_ms: u64,
        down_ms: u64,
    },
    /// SCRIPT FLUSH at `at_ms`, kill -9 and restart Redis 2 s later, SCRIPT FLUSH 2 s after that.
    FlushRestart {
        at_ms: u64,
    },
    /// CLIENT KILL TYPE normal every `every_ms` for `for_ms`.
    ClientKill {
        every_ms: u64,
        for_ms: u64,
    },
    /// SIGTERM worker 0 at `at_ms` (the supervisor starts a new one).
    Term {
        at_ms: u64,
    },
    /// Every `every_ms` for `for_ms`, alternately `DEBUG SLEEP 3` and `CLIENT PAUSE 3000`.
    Stall {
        every_ms: u64,
        for_ms: u64,
    },
    /// At `at_ms`, SIGSTOP the worker holding the promoter lock of shard 0, SIGCONT it `for_ms`
    /// later (past the lock TTL: another worker takes the lock meanwhile).
    StopLockHolder {
        at_ms: u64,
        for_ms: u64,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) tasks: usize,
    pub(crate) delay_max_ms: u64,
    pub(crate) task_ms: u64,
    pub(crate) workers: usize,
    /// Worker settings other than the library defaults (printed as `"settings"`).
    pub(crate) settings: Settings,
    pub(crate) redis_args: Vec<&'static str>,
    /// The first `burst` tasks are sent at full speed (timed: `enqueue_per_s`), the rest spread
    /// evenly over `spread_ms`.
    pub(crate) burst: usize,
    pub(crate) spread_ms: u64,
    /// Tasks outside the producer oracle, each with its own mode and expected end.
    pub(crate) special: Vec<Special>,
    /// Per worker slot: a queue it serves besides the oracle's (none: only that one). Keeps a
    /// special task on workers of its own.
    pub(crate) slot_queues: Vec<&'static str>,
    pub(crate) fault: Fault,
    /// Give up waiting for completions after this long without progress, once all are due.
    pub(crate) idle_ms: u64,
    /// Shards of the queue.
    pub(crate) shards: u16,
    /// Every due time is at least this far after its enqueue.
    pub(crate) min_delay_ms: u64,
    /// Start the workers only once every task is enqueued and due (a backlog).
    pub(crate) workers_after_produce: bool,
    /// Per worker slot: clock offset (ms) of its processes.
    pub(crate) clock_offsets: Vec<i64>,
    /// Clock skew: producer batches cycle through the first `skew_modes` of [`SKEW_MODES`]
    /// (clock offsets of +/-60 s, with `countdown` and with `eta`); 0: no skew.
    pub(crate) skew_modes: usize,
    /// Enqueue errors for lack of memory are not retried at once: the batch is set aside and
    /// sent again once the workers run and drain (scenario memory-full).
    pub(crate) memory_full: bool,
    /// A flow-control limit written to `<ns>:limits` before the workers start: (field, value);
    /// the oracle then checks that no budget holds a live slot or a waiter at the end.
    pub(crate) limit: Option<(&'static str, &'static str)>,
}

/// A task of its own, enqueued after the oracle's tasks, whose end the scenario checks through
/// `Client::status`.
#[derive(Debug, Clone)]
pub(crate) struct Special {
    pub(crate) id: &'static str,
    /// Its queue: its own, served by the worker slots that name it in `Spec::slot_queues`, so
    /// that no other special task's abort kills a worker running it.
    pub(crate) queue: &'static str,
    /// `chaos_rec` mode: 1 aborts its worker every run, `1 + k` during its first `k` runs.
    pub(crate) mode: u8,
    /// Its own `max_retries` (none: the task's default, 3).
    pub(crate) max_retries: Option<u32>,
    pub(crate) expect: Expect,
}

/// The end a special task must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expect {
    /// Dead, for whatever reason.
    Dead,
    /// Dead, with a reason that names lost workers or expired leases, not exhausted retries
    /// (its handler never failed).
    DeadOfLostWorkers,
    /// Succeeded: losing its worker a few times did not kill it.
    Succeeded,
}

impl Expect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Dead => "dead",
            Self::DeadOfLostWorkers => "dead_of_lost_workers",
            Self::Succeeded => "succeeded",
        }
    }

    /// Whether a final (state, last error) meets it.
    pub(crate) fn met(self, state: &str, error: &str) -> bool {
        let e = error.to_ascii_lowercase();
        match self {
            Self::Dead => state == "dead",
            Self::DeadOfLostWorkers => {
                state == "dead"
                    && (e.contains("lost") || e.contains("lease"))
                    && !e.contains("no retries left")
            }
            Self::Succeeded => state == "succeeded",
        }
    }
}

impl Spec {
    pub(crate) fn new(name: &'static str, tasks: usize) -> Self {
        Self {
            name,
            tasks,
            delay_max_ms: 5_000,
            task_ms: 0,
            workers: 3,
            settings: Settings::new(),
            redis_args: vec!["--save", "", "--appendonly", "no"],
            burst: tasks,
            spread_ms: 0,
            special: Vec::new(),
            slot_queues: Vec::new(),
            fault: Fault::None,
            idle_ms: 20_000,
            shards: 16,
            min_delay_ms: 0,
            workers_after_produce: false,
            clock_offsets: Vec::new(),
            skew_modes: 0,
            memory_full: false,
            limit: None,
        }
    }
}

pub(crate) fn specs(args: &Args) -> Vec<Spec> {
    let q = args.quick;
    let n = |full: usize, quick: usize| args.tasks.unwrap_or(if q { quick } else { full });
    let dur = |full: u64, quick: u64| {
        args.duration_secs
            .map(|s| s * 1000)
            .unwrap_or(if q { quick } else { full })
    };
    let w = |d: usize| args.workers.unwrap_or(d);
    let aof =
        |fsync: &'static str| vec!["--save", "", "--appendonly", "yes", "--appendfsync", fsync];
    let mut out = Vec::new();

    let mut s = Spec::new("baseline", n(100_000, 2_000));
    s.delay_max_ms = if q { 3_000 } else { 30_000 };
    s.workers = w(4);
    out.push(s);

    // kill -9 of one of 3 workers every 2 s for `d` ms, lease 2 s, every other setting the
    // library default, tasks of 20 ms due up to `delay` ms ahead.
    let kill_storm = |name: &'static str, tasks: usize, d: u64, delay: u64| {
        let mut s = Spec::new(name, tasks);
        s.delay_max_ms = delay;
        s.task_ms = 20;
        s.workers = w(3);
        s.settings.insert("lease_ms", 2_000);
        s.burst = 0;
        s.spread_ms = d.saturating_sub(delay);
        s.fault = Fault::KillStorm {
            every_ms: 2_000,
            for_ms: d,
        };
        s
    };
    // Issue 9: lateness of the tasks the killed workers had not claimed, apart from the re-run
    // delay of those they had.
    out.push(kill_storm(
        "kill-storm",
        n(100_000, 2_000),
        dur(60_000, 8_000),
        if q { 3_000 } else { 30_000 },
    ));

    // 1b. The kill storm with a concurrency limit of 16 on the task: killed workers' slots come
    // back after their lease, and no slot or waiter is left at the end.
    let mut s = kill_storm(
        "limits-kill-storm",
        n(20_000, 2_000),
        dur(30_000, 8_000),
        if q { 3_000 } else { 10_000 },
    );
    s.limit = Some(("task:chaos_rec", "concurrency=16"));
    out.push(s);

    let mut s = Spec::new("lease-lost", n(200, 40));
    s.delay_max_ms = 0;
    s.task_ms = 3_000;
    s.workers = 2;
    s.settings.insert("concurrency", 16);
    s.settings.insert("lease_ms", 2_000);
    s.fault = Fault::Stop {
        at_ms: 1_000,
        for_ms: 6_000,
        expect_stale: true,
        lock_holder: false,
    };
    out.push(s);

    // SIGSTOP one of 2 workers (the one holding the most promoter locks) for 15 s while tasks
    // fall due, then SIGCONT (issue 9): the tasks it had not claimed must not wait for it. Lease
    // 2 s, otherwise library defaults; quick mode stops it for 4 s.
    let mut s = Spec::new("sigstop", n(20_000, 1_000));
    s.delay_max_ms = if q { 2_000 } else { 5_000 };
    s.task_ms = 20;
    s.workers = 2;
    s.settings.insert("lease_ms", 2_000);
    s.burst = 0;
    s.spread_ms = if q { 5_000 } else { 22_000 };
    s.fault = Fault::Stop {
        at_ms: if q { 1_500 } else { 3_000 },
        for_ms: dur(15_000, 4_000),
        expect_stale: false,
        lock_holder: true,
    };
    out.push(s);

    for fsync in ["everysec", "always"] {
        let mut s = Spec::new(
            if fsync == "always" {
                "redis-crash-always"
            } else {
                "redis-crash-everysec"
            },
            n(100_000, 4_000),
        );
        s.redis_args = aof(fsync);
        s.delay_max_ms = 2_000;
        s.workers = w(3);
        s.burst = s.tasks / 2;
        s.spread_ms = if q { 4_000 } else { 10_000 };
        if q {
            // A claim whose reply is lost waits out one lease: keep CI short.
            s.settings.insert("lease_ms", 3_000);
        }
        s.fault = Fault::RedisCrash {
            at_ms: if q { 2_500 } else { 6_000 },
            down_ms: 1_000,
        };
        out.push(s);
    }

    let mut s = Spec::new("script-flush", n(20_000, 2_000));
    s.redis_args = aof("always");
    s.delay_max_ms = 1_000;
    s.workers = w(3);
    s.burst = 0;
    s.spread_ms = 8_000;
    if q {
        // A claim whose reply is lost waits out one lease: keep CI short.
        s.settings.insert("lease_ms", 3_000);
    }
    s.fault = Fault::FlushRestart { at_ms: 1_500 };
    out.push(s);

    let mut s = Spec::new("client-kill", n(50_000, 2_000));
    let d = dur(20_000, 5_000);
    s.delay_max_ms = 1_000;
    s.workers = w(3);
    s.burst = 0;
    s.spread_ms = d;
    if q {
        // A claim whose reply is lost waits out one lease: keep CI short.
        s.settings.insert("lease_ms", 3_000);
    }
    s.fault = Fault::ClientKill {
        every_ms: 500,
        for_ms: d,
    };
    out.push(s);

    let mut s = Spec::new("redis-stall", n(10_000, 1_000));
    let d = dur(60_000, 5_000);
    s.redis_args = vec![
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "yes",
    ];
    s.delay_max_ms = 1_000;
    s.task_ms = 500;
    s.workers = w(3);
    s.burst = 0;
    s.spread_ms = d;
    s.fault = Fault::Stall {
        every_ms: if q { 2_000 } else { 20_000 },
        for_ms: d,
    };
    out.push(s);

    let mut s = Spec::new("poison", n(2_000, 500));
    s.delay_max_ms = 2_000;
    s.task_ms = 10;
    s.workers = w(3);
    s.settings.insert("lease_ms", 1_000);
    s.special = vec![Special {
        id: "poison",
        queue: QUEUE,
        mode: 1,
        max_retries: Some(2),
        expect: Expect::Dead,
    }];
    out.push(s);

    // Issue 9: a task whose handler aborts its worker process on every run must end dead with a
    // reason naming lost workers / expired leases (its handler never failed, so not "no retries
    // left"); a task whose worker is lost during its first 4 runs (its max_retries is the
    // default 3) must complete. Each has its own queue and its own 2 workers (they also serve the
    // oracle's tasks): an abort must not also cut the other special task's run, or its count of
    // lost workers would grow past 4. Lease 1 s, otherwise library defaults.
    let mut s = Spec::new("lost-every-attempt", n(2_000, 300));
    s.delay_max_ms = 2_000;
    s.task_ms = 10;
    s.workers = 4;
    s.slot_queues = vec!["lost-a", "lost-a", "lost-b", "lost-b"];
    s.settings.insert("lease_ms", 1_000);
    s.special = vec![
        Special {
            id: "abort-always",
            queue: "lost-a",
            mode: 1,
            max_retries: None,
            expect: Expect::DeadOfLostWorkers,
        },
        Special {
            id: "lost-4x",
            queue: "lost-b",
            mode: 5,
            max_retries: None,
            expect: Expect::Succeeded,
        },
    ];
    out.push(s);

    let mut s = Spec::new("graceful-shutdown", n(64, 32));
    s.delay_max_ms = 0;
    s.task_ms = 6_000;
    s.workers = 2;
    s.settings.insert("concurrency", 32);
    s.settings.insert("shutdown_timeout_ms", 500);
    s.fault = Fault::Term { at_ms: 1_500 };
    out.push(s);

    // 4. The worker holding the one partition's promoter lock stops past the lock's TTL; another
    // takes over; the first resumes believing it still holds the lock.
    let mut s = Spec::new("stale-lock", n(20_000, 2_000));
    s.shards = 1;
    s.workers = w(3);
    s.settings.insert("lock_ttl_ms", 1_000);
    s.min_delay_ms = 1_000;
    s.delay_max_ms = if q { 4_000 } else { 10_000 };
    s.fault = Fault::StopLockHolder {
        at_ms: 1_500,
        for_ms: if q { 3_000 } else { 5_000 },
    };
    out.push(s);

    // 10. Worker clocks at +60 s, -60 s and 0; producer batches from clocks at +/-60 s, with
    // countdown and eta (quick mode leaves out eta from a clock ahead: those wait 60 s more).
    let mut s = Spec::new("clock-skew", n(20_000, 2_000));
    s.workers = 3;
    s.clock_offsets = vec![60_000, -60_000, 0];
    s.skew_modes = if q { 3 } else { 4 };
    s.delay_max_ms = if q { 2_000 } else { 10_000 };
    out.push(s);

    // 11. A backlog after an outage: every task due, in one partition, when the workers start.
    let mut s = Spec::new("backlog", n(1_000_000, 20_000));
    s.shards = 1;
    s.workers = w(3);
    s.min_delay_ms = 1_000;
    s.delay_max_ms = 0;
    s.workers_after_produce = true;
    s.idle_ms = 30_000;
    s.redis_args = vec![
        "--save",
        "",
        "--appendonly",
        "no",
        "--slowlog-log-slower-than",
        "1000",
        "--slowlog-max-len",
        "100000",
        "--latency-monitor-threshold",
        "1",
    ];
    out.push(s);

    // 12. maxmemory with noeviction: the producer fills Redis and meets its refusals; the workers
    // drain (records deleted at success); the refused batches go in afterwards.
    let mut s = Spec::new("memory-full", n(300_000, 40_000));
    s.redis_args = vec![
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory",
        if q { "8mb" } else { "64mb" },
        "--maxmemory-policy",
        "noeviction",
    ];
    s.workers = w(3);
    s.delay_max_ms = 0;
    s.workers_after_produce = true;
    s.memory_full = true;
    s.settings.insert("result_ttl_ms", 0);
    out.push(s);

    // Command-line overrides: every library default, then `--set name=value`.
    for s in &mut out {
        if args.library_defaults {
            s.settings.clear();
        }
        for kv in &args.set {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let name = SETTINGS
                .iter()
                .find(|n| **n == k)
                .unwrap_or_else(|| panic!("--set {kv}: unknown setting (one of {SETTINGS:?})"));
            let v = v
                .parse()
                .unwrap_or_else(|_| panic!("--set {kv}: not a number"));
            s.settings.insert(name, v);
        }
    }
    out
}
