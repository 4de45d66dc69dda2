//! schedule-ticks, schedule-ticks-redis-crash-always, schedule-ticks-redis-crash-everysec: one
//! 1-second periodic schedule declared by every one of 4 worker processes whose clocks are off
//! by −60 s, 0, +60 s and 0; at a quarter of the run the process that has run the most ticks so
//! far is SIGSTOPped (and resumed later), at half the run the one that has run the most since
//! (another) is SIGKILLed; in the `redis-*` variants Redis is killed with `kill -9` at 70% and
//! restarted on its AOF.
//! The oracle is the workers' run logs: every start line of a tick's task (`tick@<tick ms>`).
//!
//! Every tick from the schedule's first (the first after its declaration) to the last it
//! enqueued (`last_tick` of its record, read once the schedule is paused and the queue drained)
//! must have started (0 missed), and at its first attempt exactly once (0 created twice: with
//! result TTL 0 a tick's task record is gone once it ran, so a tick created again starts at
//! attempt 1 a second time); the record's `fired` must equal the number of those ticks. A start
//! at attempt 2 or more is one task run again after its worker was lost (at-least-once), counted
//! apart, and so is, when Redis restarts on an AOF that lacks its last second
//! (`schedule-ticks-redis-lost-second`), a run claimed in that second: its claim and ack were
//! lost with it, so the same task runs again, at attempt 1 again.

use crate::*;

/// The schedule's name, as `chaos_worker --schedule-every-ms` declares it.
const SCHEDULE: &str = "tick";
/// Its interval.
const EVERY_MS: i64 = 1_000;
/// Clock offsets of the worker slots (ms).
const OFFSETS: [i64; 4] = [-60_000, 0, 60_000, 0];
/// Worker settings of these scenarios (printed as `"settings"`): a short lease so that the
/// stopped worker's claimed tasks come back within the run; result TTL 0, so that the task record
/// of a tick is gone once it ran and only the schedule's own record guards against a second
/// creation.
const TICK_SETTINGS: [(&str, u64); 3] = [
    ("lease_ms", 2_000),
    ("result_ttl_ms", 0),
    ("shutdown_timeout_ms", 2_000),
];

/// One schedule-ticks scenario.
#[derive(Debug, Clone)]
pub(crate) struct TickSpec {
    pub(crate) name: &'static str,
    /// Run until at least this many ticks are due (then pause the schedule and drain).
    pub(crate) ticks: u64,
    /// How long the SIGSTOPped process stays stopped (ms).
    pub(crate) stop_ms: u64,
    /// `appendfsync` of the Redis `kill -9` and restart at 70% of the run (none: no crash).
    pub(crate) redis_crash: Option<&'static str>,
    /// How long Redis stays down (ms).
    pub(crate) down_ms: u64,
    /// Restart Redis on a copy of its AOF taken this long before the kill (none: on the AOF as
    /// the killed process left it). What a host crash (power loss) with `appendfsync everysec`
    /// does: the writes of the last second were in the OS page cache, not on disk, and are gone.
    pub(crate) lose_last_ms: Option<u64>,
}

/// The schedule scenarios, by name.
pub(crate) fn tick_specs(args: &Args) -> Vec<TickSpec> {
    let ticks = args
        .tasks
        .map(|n| n as u64)
        .unwrap_or(if args.quick { 18 } else { 200 });
    let stop_ms = if args.quick { 3_000 } else { 10_000 };
    let spec = |name, redis_crash, lose_last_ms| TickSpec {
        name,
        ticks,
        stop_ms,
        redis_crash,
        down_ms: 1_000,
        lose_last_ms,
    };
    vec![
        spec("schedule-ticks", None, None),
        spec("schedule-ticks-redis-crash-always", Some("always"), None),
        spec(
            "schedule-ticks-redis-crash-everysec",
            Some("everysec"),
            None,
        ),
        spec(
            "schedule-ticks-redis-lost-second",
            Some("everysec"),
            Some(1_000),
        ),
    ]
}

/// The tick of a tick task id `tick@<ms>` or `tick@<ms>~<k>`.
fn tick_of(id: &str) -> Option<i64> {
    let rest = id.strip_prefix(SCHEDULE)?.strip_prefix('@')?;
    rest.split('~').next()?.parse().ok()
}

/// What happens when, in ms from the start of the run.
#[derive(Debug, Clone, Copy)]
enum Step {
    AofCopy,
    Stop,
    Cont,
    Kill,
    RedisKill,
    RedisRestart,
}

/// Runs one schedule scenario; returns its JSON line and whether its invariant held.
pub(crate) async fn run_ticks(spec: TickSpec, bin: &Path) -> anyhow::Result<(String, bool)> {
    let dir = std::env::temp_dir().join(format!(
        "sched-chaos-{}-{}",
        spec.name,
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let redis_args: Vec<&str> = match spec.redis_crash {
        Some(fsync) => vec!["--save", "", "--appendonly", "yes", "--appendfsync", fsync],
        None => vec!["--save", "", "--appendonly", "no"],
    };
    let mut redis = start_redis(&redis_args, &dir)?;
    let url = redis.url();
    let settings: Settings = TICK_SETTINGS.into_iter().collect();
    let mut flags: Vec<String> = vec!["--redis-url".to_owned(), url.clone()];
    flags.extend(settings_flags(&settings));
    flags.extend(["--schedule-every-ms".to_owned(), EVERY_MS.to_string()]);
    let faketime = find_faketime();
    let offset_by = if faketime.is_some() {
        "libfaketime"
    } else {
        "CHAOS_CLOCK_OFFSET_MS"
    };
    let mut workers = Workers {
        bin: bin.to_owned(),
        flags,
        dir: dir.clone(),
        slots: (0..OFFSETS.len()).map(|_| None).collect(),
        spawned: 0,
        // "One SIGKILLed": a killed process stays dead.
        supervise: true,
        offsets: OFFSETS.to_vec(),
        slot_flags: Vec::new(),
        faketime,
    };
    workers.supervise_once();
    workers.supervise = false;
    let pids: Vec<u32> = (0..OFFSETS.len())
        .map(|i| workers.pid(i).unwrap_or(0))
        .collect();
    let started = Instant::now();
    let run_ms = spec.ticks * EVERY_MS as u64;
    let mut steps = vec![
        (run_ms / 4, Step::Stop),
        (run_ms / 4 + spec.stop_ms, Step::Cont),
        (run_ms / 2, Step::Kill),
    ];
    if spec.redis_crash.is_some() {
        if let Some(lose) = spec.lose_last_ms {
            steps.push(((run_ms * 7 / 10).saturating_sub(lose), Step::AofCopy));
        }
        steps.push((run_ms * 7 / 10, Step::RedisKill));
        steps.push((run_ms * 7 / 10 + spec.down_ms, Step::RedisRestart));
    }
    steps.sort_by_key(|(at, _)| *at);
    let mut at = HashMap::new();
    let (mut stop_slot, mut kill_slot) = (0usize, 1usize);
    let mut stopped_ms = 0i64;
    // The lost second, on the host clock (the Redis server's: same host): from the AOF copy to
    // the kill.
    let (mut copied_ms, mut killed_ms) = (i64::MAX, i64::MAX);
    // The schedule's revision at the copy and at the kill: the schedule writes lost with the
    // second.
    let (mut rev_copied, mut rev_killed) = (0i64, 0i64);
    let mut fault_errors = 0u64;
    for (when, step) in steps {
        let wait = Duration::from_millis(when).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        match step {
            Step::Stop => {
                stop_slot = busiest(&dir, &pids, 0, None);
                stopped_ms = now_ms();
                signal(pids[stop_slot], "STOP");
            }
            Step::Cont => signal(pids[stop_slot], "CONT"),
            Step::Kill => {
                kill_slot = busiest(&dir, &pids, stopped_ms, Some(stop_slot));
                signal(pids[kill_slot], "KILL");
            }
            Step::AofCopy => {
                copied_ms = now_ms();
                rev_copied = schedule_rev(&redis);
                if copy_dir(&redis.dir().join("appendonlydir"), &dir.join("aof-copy")).is_err() {
                    fault_errors += 1;
                }
            }
            Step::RedisKill => {
                rev_killed = schedule_rev(&redis);
                redis.kill();
                killed_ms = now_ms();
                if spec.lose_last_ms.is_some() {
                    let aof = redis.dir().join("appendonlydir");
                    let restored = std::fs::remove_dir_all(&aof)
                        .and_then(|()| copy_dir(&dir.join("aof-copy"), &aof));
                    if restored.is_err() {
                        fault_errors += 1;
                    }
                }
            }
            Step::RedisRestart => {
                if tokio::task::block_in_place(|| redis.try_restart()).is_err() {
                    fault_errors += 1;
                }
            }
        }
        at.insert(format!("{step:?}"), started.elapsed().as_millis() as u64);
    }
    // Ticks are enqueued `schedule_lookahead` (5 s) ahead: pause 4 s before the end, and the
    // ticks already enqueued carry the run to about `ticks` seconds.
    let pause_at = Duration::from_millis(run_ms.saturating_sub(4_000));
    tokio::time::sleep(pause_at.saturating_sub(started.elapsed())).await;
    let client = Client::with_config(ClientConfig::new(&url).namespace(NS)).await?;
    let schedules = scheduler::Schedules::new(&client);
    schedules.pause(SCHEDULE).await?;
    // Drain: every enqueued tick's task ran (a task claimed by the killed worker comes back
    // after its lease).
    let drain_until = Instant::now() + Duration::from_secs(60);
    loop {
        let st = client.queue_stats(QUEUE).await?;
        if st.scheduled + st.ready + st.running == 0 || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workers.stop_all(Duration::from_secs(5));
    let info = schedules.get(SCHEDULE).await?;
    let created_at: i64 = {
        let mut conn = redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{NS}:*:sch:{SCHEDULE}"))
            .query(&mut conn)?;
        let key = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no schedule record"))?;
        redis::cmd("HGET")
            .arg(key)
            .arg("created_at")
            .query(&mut conn)?
    };
    let (starts, _) = read_logs(&dir);
    drop(redis);

    // The oracle: starts per tick, from the run logs.
    let mut per_tick: BTreeMap<i64, Vec<&Start>> = BTreeMap::new();
    for (id, s) in &starts {
        if let Some(t) = tick_of(id) {
            per_tick.entry(t).or_default().extend(s.iter());
        }
    }
    let first = (created_at / EVERY_MS + 1) * EVERY_MS;
    let last = info.last_tick_ms.unwrap_or(first - EVERY_MS);
    let span = ((last - first) / EVERY_MS + 1).max(0) as u64;
    let mut missed = Vec::new();
    let (mut created_twice, mut ran_twice, mut rerun, mut rerun_lost) = (0u64, 0u64, 0u64, 0u64);
    let mut lateness = Vec::new();
    let mut t = first;
    while t <= last {
        match per_tick.get(&t) {
            None => missed.push(t),
            Some(s) => {
                let firsts = s.iter().filter(|s| s.attempt == 1).count();
                let in_lost_second = s
                    .iter()
                    .any(|s| s.claimed >= copied_ms && s.claimed <= killed_ms);
                if firsts > 1 && in_lost_second {
                    rerun_lost += 1;
                } else if firsts > 1 {
                    created_twice += 1;
                }
                if s.len() > 1 {
                    ran_twice += 1;
                }
                if s.iter().any(|s| s.attempt > 1) {
                    rerun += 1;
                }
                lateness.push(s.iter().map(|s| s.claimed - t).min().unwrap_or(0));
            }
        }
        t += EVERY_MS;
    }
    let outside = per_tick
        .keys()
        .filter(|t| **t < first || **t > last)
        .count();
    lateness.sort_unstable();
    // The clock offset in force per slot: the process's own clock at a start minus the claim
    // time on the Redis clock (median), in seconds.
    let measured: Vec<String> = pids
        .iter()
        .map(|pid| {
            let mut d: Vec<i64> = starts
                .values()
                .flatten()
                .filter(|s| s.pid == *pid)
                .filter_map(|s| s.local.map(|l| l - s.claimed))
                .collect();
            d.sort_unstable();
            if d.is_empty() {
                "null".to_owned()
            } else {
                format!("{:.1}", pct(&d, 0.5) as f64 / 1000.0)
            }
        })
        .collect();
    let runs_per_slot: Vec<String> = pids
        .iter()
        .map(|pid| {
            starts
                .values()
                .flatten()
                .filter(|s| s.pid == *pid)
                .count()
                .to_string()
        })
        .collect();
    let ok = span >= spec.ticks.saturating_sub(2)
        && missed.is_empty()
        && created_twice == 0
        && outside == 0
        && info.fired == span
        && fault_errors == 0;
    let redis_json = match spec.redis_crash {
        Some(fsync) => format!(
            "{{\"appendonly\":\"yes\",\"appendfsync\":\"{fsync}\",\"kill9_at_ms\":{},\"down_ms\":{},\"restarted_on_aof_of_ms_before\":{},\"schedule_writes_lost\":{}}}",
            at.get("RedisKill").copied().unwrap_or(0),
            spec.down_ms,
            spec.lose_last_ms.unwrap_or(0),
            if spec.lose_last_ms.is_some() {
                rev_killed - rev_copied
            } else {
                0
            }
        ),
        None => "null".to_owned(),
    };
    let json = format!(
        "{{\"scenario\":\"{}\",\"ticks\":{span},\"every_ms\":{EVERY_MS},\"workers\":{},\"clock_offsets_s\":[{}],\"offset_by\":\"{offset_by}\",\"measured_offsets_s\":[{}],\"runs_per_worker\":[{}],\"sigstop\":{{\"worker\":{stop_slot},\"clock_offset_s\":{},\"at_ms\":{},\"for_ms\":{}}},\"sigkill\":{{\"worker\":{kill_slot},\"clock_offset_s\":{},\"at_ms\":{}}},\"redis_crash\":{redis_json},\"missed\":{},\"missed_ticks\":{:?},\"created_twice\":{created_twice},\"ran_twice\":{ran_twice},\"rerun_after_lost_worker\":{rerun},\"rerun_after_lost_aof_second\":{rerun_lost},\"started_outside_span\":{outside},\"fired\":{},\"skipped\":{},\"lateness_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"settings\":{},\"fault_errors\":{fault_errors},\"ok\":{ok}}}",
        spec.name,
        OFFSETS.len(),
        OFFSETS.iter().map(|o| (o / 1000).to_string()).collect::<Vec<_>>().join(","),
        measured.join(","),
        runs_per_slot.join(","),
        OFFSETS[stop_slot] / 1000,
        at.get("Stop").copied().unwrap_or(0),
        spec.stop_ms,
        OFFSETS[kill_slot] / 1000,
        at.get("Kill").copied().unwrap_or(0),
        missed.len(),
        missed,
        info.fired,
        info.skipped,
        pct(&lateness, 0.5),
        pct(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0),
        settings_json(&settings),
    );
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("[{}] logs kept in {}", spec.name, dir.display());
    }
    Ok((json, ok))
}

/// Copies the files of directory `from` (an AOF directory: flat) into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// The schedule record's `rev` (0 when unreadable).
fn schedule_rev(redis: &Redis) -> i64 {
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{NS}:*:sch:{SCHEDULE}"))
        .query(&mut conn)
        .unwrap_or_default();
    keys.first()
        .and_then(|k| {
            redis::cmd("HGET")
                .arg(k)
                .arg("rev")
                .query::<Option<i64>>(&mut conn)
                .ok()
                .flatten()
        })
        .unwrap_or(0)
}

/// The worker slot whose process has started the most runs claimed at or after `since_ms`
/// (unix ms), other than `except`: the one a fault hurts most.
fn busiest(dir: &Path, pids: &[u32], since_ms: i64, except: Option<usize>) -> usize {
    let (starts, _) = read_logs(dir);
    (0..pids.len())
        .filter(|i| Some(*i) != except)
        .max_by_key(|i| {
            starts
                .values()
                .flatten()
                .filter(|s| s.pid == pids[*i] && s.claimed >= since_ms)
                .count()
        })
        .unwrap_or(0)
}
