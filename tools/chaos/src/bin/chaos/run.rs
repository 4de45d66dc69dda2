//! One scenario from start to verdict: Redis, workers, producer, fault, then the oracle and its JSON line.

use crate::*;

/// Runs one scenario; returns its JSON line and whether its invariant held.
pub(crate) async fn run(spec: Spec, bin: &Path) -> anyhow::Result<(String, bool)> {
    let dir = std::env::temp_dir().join(format!(
        "sched-chaos-{}-{}-{}",
        std::process::id(),
        spec.name,
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let redis = Arc::new(Mutex::new(start_redis(&spec.redis_args, &dir)?));
    let url = redis.lock().unwrap().url();
    // Register the queue before any worker starts.
    Client::with_config(
        ClientConfig::new(&url)
            .namespace(NS)
            .queue_shards(QUEUE, spec.shards),
    )
    .await?
    .shards(QUEUE)
    .await?;
    if let Some((field, value)) = spec.limit {
        redis
            .lock()
            .unwrap()
            .cmd(&["HSET", &format!("{NS}:limits"), field, value])?;
    }
    // Only the scenario's own settings are passed: the rest is the library default.
    let mut flags: Vec<String> = vec!["--redis-url".to_owned(), url.clone()];
    flags.extend(settings_flags(&spec.settings));
    let lease_ms = setting_ms(&spec.settings, "lease_ms");
    let workers = Arc::new(Mutex::new(Workers {
        bin: bin.to_owned(),
        flags,
        dir: dir.clone(),
        slots: (0..spec.workers).map(|_| None).collect(),
        spawned: 0,
        supervise: true,
        offsets: spec.clock_offsets.clone(),
        slot_flags: spec
            .slot_queues
            .iter()
            .map(|q| vec!["--queue".to_owned(), format!("{QUEUE},{q}")])
            .collect(),
        faketime: None,
    }));
    if !spec.workers_after_produce {
        workers.lock().unwrap().supervise_once();
        // Let the workers subscribe before the first due time.
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        workers.lock().unwrap().supervise = false;
    }
    let ev = Arc::new(Mutex::new(Events::default()));
    let restarts = Arc::new(AtomicU64::new(0));
    let stop_sup = tokio_util_like_flag();
    let sup = {
        let (w, r, stop) = (workers.clone(), restarts.clone(), stop_sup.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = w.lock().unwrap().supervise_once();
                r.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let t0 = now_ms();
    let faults = tokio::spawn(inject(
        spec.clone(),
        redis.clone(),
        workers.clone(),
        ev.clone(),
    ));
    let mut produced = tokio::spawn(produce(url.clone(), spec.clone())).await??;
    let _ = faults.await;
    // Backlog and memory-full: the workers start now, on a full queue (after the last due time,
    // so that every task is due); SLOWLOG and LATENCY count from here.
    let mut workers_start_ms = t0;
    let mut memory_before = 0u64;
    let mut resent = (0u64, 0i64);
    if spec.workers_after_produce {
        let last_due = produced.acked.iter().map(|a| a.1).max().unwrap_or(0);
        let wait = last_due + 500 - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        memory_before = used_memory(&redis.lock().unwrap());
        {
            let r = redis.lock().unwrap();
            let _ = r.cmd(&["SLOWLOG", "RESET"]);
            let _ = r.cmd(&["LATENCY", "RESET"]);
        }
        workers_start_ms = now_ms();
        {
            let mut w = workers.lock().unwrap();
            w.supervise = true;
            w.supervise_once();
        }
        if spec.memory_full {
            resent = resend(&url, &mut produced).await?;
        }
    }
    let max_due = produced.acked.iter().map(|a| a.1).max().unwrap_or(t0);
    // Wait for every acknowledged task to complete, or for progress to stop.
    let mut last_done = 0;
    let mut last_progress = Instant::now();
    let mut all_done_ms = None;
    let hard = Instant::now() + Duration::from_secs(600);
    while Instant::now() < hard {
        let (_, dones) = read_logs(&dir);
        let done_ids: HashSet<&str> = dones.iter().map(|d| d.0.as_str()).collect();
        let n = produced
            .acked
            .iter()
            .filter(|a| done_ids.contains(a.0.as_str()))
            .count();
        let mut special_settled = true;
        for sp in &spec.special {
            special_settled &= matches!(
                special_info(&url, sp).await.map(|i| i.0).as_deref(),
                Some("dead") | Some("succeeded")
            );
        }
        if n == produced.acked.len() && special_settled {
            all_done_ms = Some(now_ms());
            break;
        }
        if n != last_done {
            last_done = n;
            last_progress = Instant::now();
        }
        // A task whose claim reply was lost (connection killed, Redis restarted) stays leased
        // until its lease expires: wait at least one lease past the last progress.
        let idle_ms = spec.idle_ms.max(lease_ms + 10_000);
        if now_ms() > max_due + 5_000 && last_progress.elapsed().as_millis() as u64 > idle_ms {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let end_ms = all_done_ms.unwrap_or_else(now_ms);
    stop_sup.store(true, Ordering::Relaxed);
    let _ = sup.await;
    // Graceful stop: the workers print their reports.
    let stats = connect_client(&url).await?.queue_stats(QUEUE).await.ok();
    let mut special = Vec::new();
    for sp in &spec.special {
        special.push((sp.clone(), special_info(&url, sp).await));
    }
    let (slowlog_max_us, slowlog_cmd) = slowlog_top(&redis.lock().unwrap());
    let slow_count = slowlog_len(&redis.lock().unwrap());
    let slow_by = if spec.workers_after_produce {
        slowlog_by_command(&redis.lock().unwrap())
    } else {
        String::new()
    };
    let memory_end = used_memory(&redis.lock().unwrap());
    let set_aside = produced.oom_errors_tasks();
    // LATENCY LATEST read now, before Redis is stopped.
    let redis_final = RedisFigures::read(&redis.lock().unwrap());
    {
        let w = workers.clone();
        tokio::task::spawn_blocking(move || w.lock().unwrap().stop_all(Duration::from_secs(40)))
            .await?;
    }
    // Limits: once a lease has passed since the last kill, no budget holds a live slot or a
    // waiter (a killed worker's slots expire with its lease; nothing leaks).
    let leftover = if spec.limit.is_some() {
        tokio::time::sleep(Duration::from_millis(lease_ms + 500)).await;
        Some(limit_leftovers(&redis.lock().unwrap()))
    } else {
        None
    };
    let reports = read_reports(&dir);
    let (starts, dones) = read_logs(&dir);
    let ev = std::mem::take(&mut *ev.lock().unwrap());
    redis.lock().unwrap().kill();

    // The oracle.
    let mut lost = 0u64;
    let mut dup = 0u64;
    let mut early = 0u64;
    let mut late = Vec::with_capacity(produced.acked.len());
    let mut done_ids: HashMap<&str, u64> = HashMap::new();
    for d in &dones {
        *done_ids.entry(d.0.as_str()).or_default() += 1;
    }
    let mut done_dup = 0u64;
    // Clock skew: tasks asked for at an instant already past (eta from a clock behind) run at
    // once; their lateness against that instant says nothing of the scheduler: left out.
    let behind: HashSet<&str> = produced.eta_behind.iter().map(|e| e.0.as_str()).collect();
    for (id, due) in &produced.acked {
        if let Some(s) = starts.get(id) {
            dup += s.len() as u64 - 1;
            early += s.iter().filter(|x| x.claimed < *due).count() as u64;
            if !behind.contains(id.as_str()) {
                late.push(s.iter().map(|x| x.claimed).min().unwrap() - due);
            }
        }
        match done_ids.get(id.as_str()) {
            None => lost += 1,
            Some(n) => done_dup += n - 1,
        }
    }
    late.sort_unstable();
    // In flight on killed (or stopped / terminated) workers: starts without a matching done.
    let mut inflight_killed = 0u64;
    let mut recovery = Vec::new();
    // Processes a special task's run aborted (a start without its done line), with the time it
    // started.
    let special_ids: HashSet<&str> = spec.special.iter().map(|sp| sp.id).collect();
    let aborted: Vec<(u32, i64)> = spec
        .special
        .iter()
        .filter_map(|sp| starts.get(sp.id).map(|s| (sp.id, s)))
        .flat_map(|(id, s)| {
            s.iter()
                .filter(|x| !dones.contains(&(id.to_owned(), x.attempt, x.pid)))
                .map(|x| (x.pid, x.claimed))
                .collect::<Vec<_>>()
        })
        .collect();
    // SIGSTOPped processes, with the time of the stop (and of the SIGCONT).
    let stopped: HashMap<u32, (i64, i64)> = ev.stopped_at.iter().copied().collect();
    let cut: HashMap<u32, i64> = ev
        .kills
        .iter()
        .map(|(p, t)| (*p, *t))
        .chain(ev.termed.iter().copied())
        .chain(aborted.iter().copied())
        .chain(stopped.iter().map(|(p, (t, _))| (*p, *t)))
        .collect();
    for (id, s) in &starts {
        if special_ids.contains(id.as_str()) {
            continue;
        }
        for x in s {
            let Some(t) = cut.get(&x.pid) else { continue };
            if let Some((stop, _)) = stopped.get(&x.pid) {
                // A stopped process finishes its runs after SIGCONT: what it had claimed before
                // the stop and was started again elsewhere was in flight.
                let again = s.iter().any(|y| y.claimed >= x.claimed && y.pid != x.pid);
                if x.claimed > *stop || !again {
                    continue;
                }
            } else if dones.contains(&(id.clone(), x.attempt, x.pid)) {
                continue;
            }
            inflight_killed += 1;
            if let Some(next) = s
                .iter()
                .filter(|y| y.claimed >= x.claimed && y.pid != x.pid)
                .map(|y| y.claimed)
                .min()
            {
                recovery.push(next - t);
            }
        }
    }
    recovery.sort_unstable();
    // Repeated starts whose previous start was on a killed, aborted or terminated process.
    let mut dup_after_kill = 0u64;
    for (id, s) in &starts {
        if special_ids.contains(id.as_str()) {
            continue;
        }
        let mut v: Vec<&Start> = s.iter().collect();
        v.sort_by_key(|x| x.claimed);
        dup_after_kill += v.windows(2).filter(|w| cut.contains_key(&w[0].pid)).count() as u64;
    }
    // Lateness of the tasks no lost worker had claimed (issue 9): first start minus due, both on
    // the Redis clock, leaving out a task whose first run was on a worker killed (or aborted,
    // terminated) during that run, claimed by a stopped worker before its SIGCONT, or whose first
    // logged start is not its first attempt (an earlier claim was lost before its start line).
    let mut late_unclaimed = Vec::new();
    let (mut first_on_lost, mut first_on_stopped, mut start_unlogged) = (0u64, 0u64, 0u64);
    for (id, due) in &produced.acked {
        let Some(first) = starts
            .get(id)
            .and_then(|s| s.iter().min_by_key(|x| x.claimed))
        else {
            continue;
        };
        if let Some((_, cont)) = stopped.get(&first.pid) {
            if first.claimed <= *cont {
                first_on_stopped += 1;
                continue;
            }
        }
        if cut.contains_key(&first.pid)
            && !stopped.contains_key(&first.pid)
            && !dones.contains(&(id.clone(), first.attempt, first.pid))
        {
            first_on_lost += 1;
        } else if first.attempt > 1 {
            start_unlogged += 1;
        } else if !behind.contains(id.as_str()) {
            late_unclaimed.push(first.claimed - due);
        }
    }
    late_unclaimed.sort_unstable();
    let unclaimed_p99 = pct(&late_unclaimed, 0.99);
    let unclaimed_max = late_unclaimed.last().copied().unwrap_or(0);
    let unclaimed_met =
        unclaimed_p99 <= TARGET_UNCLAIMED_P99_MS && unclaimed_max <= TARGET_UNCLAIMED_MAX_MS;
    let rerun_max = recovery.last().copied().unwrap_or(0);
    let rerun_met = rerun_max <= lease_ms as i64 + TARGET_RERUN_OVER_LEASE_MS;
    let unclaimed_json = format!(
        ",\"lateness_unclaimed_ms\":{{\"p50\":{},\"p99\":{unclaimed_p99},\"max\":{unclaimed_max},\"n\":{}}}",
        pct(&late_unclaimed, 0.5),
        late_unclaimed.len()
    );
    let rerun_json = format!(
        ",\"rerun_ms\":{{\"p50\":{},\"max\":{rerun_max},\"n\":{}}},\"rerun_bound\":{}",
        pct(&recovery, 0.5),
        recovery.len(),
        if recovery.is_empty() {
            "null".to_owned()
        } else {
            format!("\"lease+{}ms\"", rerun_max - lease_ms as i64)
        }
    );
    let elapsed_s = ((end_ms - t0) as f64 / 1000.0).max(0.001);
    let throughput = produced.acked.len() as f64 / elapsed_s;
    let rep = |k: &str| reports.get(k).copied().unwrap_or(0);
    let enqueued_counter = stats
        .as_ref()
        .and_then(|s| s.counters.get("enqueued").copied())
        .unwrap_or(0);
    let resume_ms = ev.redis_up_ms.map(|up| {
        starts
            .values()
            .flatten()
            .map(|x| x.claimed)
            .filter(|c| *c >= up)
            .min()
            .map_or(-1, |c| c - up)
    });

    let mut extra = String::new();
    let mut ok = lost == 0 && early == 0;
    match spec.fault {
        Fault::None if !spec.special.is_empty() => ok &= dup == dup_after_kill,
        Fault::None => ok &= dup == 0,
        Fault::KillStorm { every_ms, .. } => {
            // Timing is reported against its targets, never asserted (`ok` is the invariants).
            ok &= dup == dup_after_kill;
            extra += &format!(
                ",\"kills\":{},\"kill_every_ms\":{every_ms},\"dup_after_kill\":{dup_after_kill},\"inflight_on_killed\":{},\"restarts\":{}{unclaimed_json},\"first_run_on_killed\":{first_on_lost},\"claimed_start_unlogged\":{start_unlogged}{rerun_json},\"targets\":{{\"unclaimed_p99_ms\":{TARGET_UNCLAIMED_P99_MS},\"unclaimed_max_ms\":{TARGET_UNCLAIMED_MAX_MS},\"rerun_max\":\"lease+{TARGET_RERUN_OVER_LEASE_MS}ms\"}},\"targets_met\":{}",
                ev.kills.len(),
                inflight_killed,
                restarts.load(Ordering::Relaxed) + ev.restarts,
                unclaimed_met && rerun_met
            );
        }
        Fault::Stop {
            for_ms,
            expect_stale: false,
            ..
        } => {
            // sigstop: the tasks the stopped worker had not claimed must not wait for it.
            ok &= dup == dup_after_kill && !stopped.is_empty();
            extra += &format!(
                ",\"stopped_ms\":{for_ms},\"stopped_held_locks\":{},\"dup_after_stop\":{dup_after_kill},\"inflight_on_stopped\":{inflight_killed}{unclaimed_json},\"first_claimed_by_stopped\":{first_on_stopped},\"claimed_start_unlogged\":{start_unlogged}{rerun_json},\"targets\":{{\"unclaimed_p99_ms\":{TARGET_UNCLAIMED_P99_MS},\"unclaimed_max_ms\":{TARGET_UNCLAIMED_MAX_MS}}},\"targets_met\":{unclaimed_met},\"done_twice\":{done_dup}",
                ev.stopped_locks
            );
        }
        Fault::Stop { for_ms, .. } => {
            let stopped: HashSet<u32> = ev.stopped.iter().copied().collect();
            let rerun = starts
                .values()
                .filter(|s| s.iter().any(|x| stopped.contains(&x.pid)) && s.len() > 1)
                .count();
            ok &= rerun > 0 && rep("stale") > 0;
            extra += &format!(
                ",\"stopped_ms\":{for_ms},\"rerun_elsewhere\":{rerun},\"stale_acks_rejected\":{},\"done_twice\":{done_dup}",
                rep("stale")
            );
        }
        Fault::RedisCrash { .. } => {
            if spec.redis_args.contains(&"always") {
                ok &= ev.fault_errors == 0;
            } else {
                // everysec may lose up to ~1 s of acknowledged writes: reported, not asserted.
                ok = early == 0 && ev.fault_errors == 0;
            }
            ok &= resume_ms.is_some_and(|r| r >= 0);
            extra += &format!(
                ",\"appendfsync\":\"{}\",\"producer_errors\":{},\"resume_ms\":{},\"enqueue_per_s\":{:.0}",
                if spec.redis_args.contains(&"always") { "always" } else { "everysec" },
                produced.errors,
                resume_ms.unwrap_or(-1),
                produced.enqueue_per_s
            );
        }
        Fault::FlushRestart { .. } => {
            ok &= produced.errors == 0 && ev.fault_errors == 0;
            extra += &format!(
                ",\"producer_errors\":{},\"resume_ms\":{}",
                produced.errors,
                resume_ms.unwrap_or(-1)
            );
        }
        Fault::ClientKill { .. } => {
            ok &= enqueued_counter == spec.tasks as u64;
            extra += &format!(
                ",\"producer_errors\":{},\"tasks_created_in_redis\":{},\"created_replies\":{}",
                produced.errors, enqueued_counter, produced.created
            );
        }
        Fault::Stall { .. } => {
            let reaped = stats
                .as_ref()
                .and_then(|s| s.counters.get("reaped").copied())
                .unwrap_or(0);
            ok &= dup == 0 && reaped == 0 && ev.fault_errors == 0 && ev.stalls > 0;
            extra += &format!(
                ",\"stalls\":{},\"stall_errors\":{},\"producer_errors\":{},\"lease_ms\":{}",
                ev.stalls, ev.fault_errors, produced.errors, lease_ms
            );
        }
        Fault::StopLockHolder { for_ms, .. } => {
            let promoted_counter = stats
                .as_ref()
                .and_then(|s| s.counters.get("promoted").copied())
                .unwrap_or(0);
            let holder = ev.lock_holder.as_ref().map(|h| h.0);
            let holder_promoted = holder
                .map(|pid| {
                    read_report_of(&dir, pid)
                        .get("promoted")
                        .copied()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            // No double move: each task was promoted once (every due time lay ahead of its
            // enqueue), the workers' own counts add up to the partition's counter, and no task
            // ran twice.
            ok &= dup == 0
                && ev.fault_errors == 0
                && ev.lock_taken_over_ms.is_some()
                && promoted_counter == produced.acked.len() as u64
                && rep("promoted") == promoted_counter;
            extra += &format!(
                ",\"lock_ttl_ms\":{},\"stopped_ms\":{for_ms},\"lock_taken_over_after_ms\":{},\"promoted_counter\":{promoted_counter},\"promoted_by_workers\":{},\"promoted_by_stale_holder\":{holder_promoted},\"stale\":{},\"done_twice\":{done_dup}",
                setting_ms(&spec.settings, "lock_ttl_ms"),
                ev.lock_taken_over_ms.unwrap_or(-1),
                rep("promoted"),
                rep("stale")
            );
        }
        Fault::Term { .. } => {
            ok &= done_dup == 0 && rep("released") > 0;
            extra += &format!(
                ",\"released\":{},\"term_to_exit_ms\":{},\"done_twice\":{done_dup}",
                rep("released"),
                ev.term_exit_ms.unwrap_or(-1)
            );
        }
    }
    if spec.skew_modes > 0 || !spec.clock_offsets.is_empty() {
        // The offset each worker process ran with, from its clock line (its own clock beside
        // the Redis clock at its start), and the lateness of its starts. A process may run no
        // task at all (the holders of the promoter locks claim what they promote), so the
        // offsets come from the clock lines, not from the starts.
        let offsets = read_clock_offsets(&dir);
        let due_of: HashMap<&str, i64> = produced
            .acked
            .iter()
            .map(|(id, due)| (id.as_str(), *due))
            .collect();
        let mut late_by_pid: HashMap<u32, Vec<i64>> = HashMap::new();
        for (id, v) in &starts {
            if behind.contains(id.as_str()) {
                continue;
            }
            for x in v {
                if let Some(due) = due_of.get(id.as_str()) {
                    late_by_pid.entry(x.pid).or_default().push(x.claimed - due);
                }
            }
        }
        let seconds = |ms: i64| (ms as f64 / 1000.0).round() as i64;
        // Every configured offset was in force in some worker process.
        let observed: HashSet<i64> = offsets.values().map(|o| seconds(*o)).collect();
        ok &= spec
            .clock_offsets
            .iter()
            .all(|o| observed.contains(&seconds(*o)));
        let mut per_worker: Vec<String> = offsets
            .iter()
            .map(|(pid, offset)| {
                let mut late = late_by_pid.remove(pid).unwrap_or_default();
                late.sort_unstable();
                format!(
                    "{{\"clock_offset_s\":{},\"starts\":{},\"lateness_p99_ms\":{},\"early\":{}}}",
                    seconds(*offset),
                    late.len(),
                    pct(&late, 0.99),
                    late.iter().filter(|l| **l < 0).count()
                )
            })
            .collect();
        per_worker.sort();
        let behind_ran_before_intent = produced
            .eta_behind
            .iter()
            .filter(|(id, intended)| {
                starts
                    .get(id)
                    .is_some_and(|s| s.iter().any(|x| x.claimed < *intended))
            })
            .count();
        let mut modes: Vec<_> = produced.skew_modes.iter().collect();
        modes.sort();
        extra += &format!(
            ",\"workers\":[{}],\"producer_modes\":{{{}}},\"eta_from_clock_behind\":{},\"eta_behind_ran_before_true_intent\":{behind_ran_before_intent}",
            per_worker.join(","),
            modes
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect::<Vec<_>>()
                .join(","),
            produced.eta_behind.len()
        );
    }
    if let Some((live, waiting)) = leftover {
        ok &= live == 0 && waiting == 0;
        extra += &format!(
            ",\"limit\":{:?},\"limit_live_slots_at_end\":{live},\"limit_waiters_at_end\":{waiting}",
            spec.limit
                .map(|l| format!("{}={}", l.0, l.1))
                .unwrap_or_default()
        );
    }
    if spec.workers_after_produce {
        let drain_s = (end_ms - workers_start_ms) as f64 / 1000.0;
        let (lat_event, lat_max_ms) = latency_top(&redis_final);
        extra += &format!(
            ",\"shards\":{},\"drain_s\":{drain_s:.1},\"drain_per_s\":{:.0},\"used_memory_mb_at_start\":{:.1},\"latency_max_ms\":{lat_max_ms},\"latency_event\":{lat_event:?},\"slow_over_1ms\":{slow_count},\"slowlog_by_command\":{slow_by}",
            spec.shards,
            produced.acked.len() as f64 / drain_s.max(0.001),
            memory_before as f64 / 1048576.0,
        );
    }
    if spec.memory_full {
        ok &= produced.oom_errors > 0 && produced.rejected.is_empty();
        extra += &format!(
            ",\"maxmemory\":\"{}\",\"oom_refused_calls\":{},\"set_aside_tasks\":{},\"oom_error\":{:?},\"resend_refused\":{},\"resend_ms\":{},\"used_memory_mb_end\":{:.1}",
            spec.redis_args
                .iter()
                .skip_while(|a| **a != "--maxmemory")
                .nth(1)
                .unwrap_or(&"?"),
            produced.oom_errors,
            set_aside,
            produced.oom_error_text,
            resent.0,
            resent.1,
            memory_end as f64 / 1048576.0,
        );
    }
    if !special.is_empty() {
        // Each special task's end, read through `Client::status`, against what it must reach.
        let mut items = Vec::new();
        for (sp, info) in &special {
            let (state, attempts, err) = info.clone().unwrap_or_default();
            let met = sp.expect.met(&state, &err);
            ok &= met;
            items.push(format!(
                "{{\"id\":\"{}/{}\",\"mode\":{},\"expect\":\"{}\",\"state\":\"{state}\",\"runs\":{},\"attempts\":{attempts},\"error\":{err:?},\"met\":{met}}}",
                sp.queue,
                sp.id,
                sp.mode,
                sp.expect.as_str(),
                starts.get(sp.id).map_or(0, |s| s.len()),
            ));
        }
        extra += &format!(
            ",\"special\":[{}],\"restarts\":{},\"inflight_on_aborted\":{inflight_killed},\"dup_after_abort\":{dup_after_kill}",
            items.join(","),
            restarts.load(Ordering::Relaxed)
        );
    }
    let json = format!(
        "{{\"scenario\":\"{}\",\"settings\":{},\"workers\":{},\"tasks\":{},\"acked\":{},\"lost\":{lost},\"duplicates\":{dup},\"early\":{early},\"lateness_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"throughput_per_s\":{throughput:.0},\"recovery_ms\":{{\"p50\":{},\"max\":{}}},\"stale\":{},\"reaped\":{},\"slowlog_max_us\":{slowlog_max_us},\"slowlog_cmd\":{slowlog_cmd:?}{extra},\"ok\":{ok}}}",
        spec.name,
        settings_json(&spec.settings),
        spec.workers,
        spec.tasks,
        produced.acked.len(),
        pct(&late, 0.5),
        pct(&late, 0.99),
        late.last().copied().unwrap_or(0),
        pct(&recovery, 0.5),
        recovery.last().copied().unwrap_or(0),
        rep("stale"),
        stats
            .as_ref()
            .and_then(|s| s.counters.get("reaped").copied())
            .unwrap_or(0),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok((json, ok))
}

pub(crate) fn tokio_util_like_flag() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// A task's state, attempts and last error, through `Client::status`.
pub(crate) async fn special_info(url: &str, sp: &Special) -> Option<(String, u32, String)> {
    let c = connect_client(url).await.ok()?;
    let info = c.status(&TaskId::new(sp.queue, sp.id)).await.ok()?;
    Some((
        info.state.as_str().to_owned(),
        info.attempts,
        info.last_error.unwrap_or_default(),
    ))
}

/// Live slots (holders whose lease deadline is ahead) and waiters of every limit budget.
fn limit_leftovers(r: &Redis) -> (u64, u64) {
    let keys = match r.cmd(&["KEYS", &format!("{NS}:{{lim:*")]) {
        Ok(redis::Value::Array(k)) => k,
        _ => return (u64::MAX, u64::MAX),
    };
    let now = match r.cmd(&["TIME"]) {
        Ok(redis::Value::Array(t)) => match t.first() {
            Some(redis::Value::BulkString(s)) => {
                String::from_utf8_lossy(s).parse::<i64>().unwrap_or(0) * 1000
            }
            _ => 0,
        },
        _ => 0,
    };
    let (mut live, mut waiting) = (0, 0);
    for k in keys {
        let redis::Value::BulkString(k) = k else {
            continue;
        };
        let k = String::from_utf8_lossy(&k).into_owned();
        if k.ends_with(":run") {
            if let Ok(redis::Value::Int(n)) = r.cmd(&["ZCOUNT", &k, &format!("({now}"), "+inf"]) {
                live += n as u64;
            }
        } else if k.ends_with(":wait") {
            if let Ok(redis::Value::Int(n)) = r.cmd(&["ZCARD", &k]) {
                waiting += n as u64;
            }
        }
    }
    (live, waiting)
}
