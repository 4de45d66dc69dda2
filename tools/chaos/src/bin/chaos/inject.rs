//! The fault injector: kills, stops and resumes workers, crashes and restarts Redis, flushes its scripts, kills clients.

use crate::*;

pub(crate) async fn inject(
    spec: Spec,
    redis: Arc<Mutex<Redis>>,
    workers: Arc<Mutex<Workers>>,
    ev: Arc<Mutex<Events>>,
) {
    let sleep = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    match spec.fault {
        Fault::None => {}
        Fault::KillStorm { every_ms, for_ms } => {
            let end = Instant::now() + Duration::from_millis(for_ms);
            while Instant::now() < end {
                sleep(every_ms).await;
                let mut w = workers.lock().unwrap();
                let i = rand::rng().random_range(0..w.slots.len());
                if let Some(pid) = w.pid(i) {
                    signal(pid, "KILL");
                    ev.lock().unwrap().kills.insert(pid, now_ms());
                    // The supervisor restarts it.
                    std::thread::sleep(Duration::from_millis(20));
                    let n = w.supervise_once();
                    ev.lock().unwrap().restarts += n as u64;
                }
            }
        }
        Fault::Stop {
            at_ms,
            for_ms,
            lock_holder,
            ..
        } => {
            sleep(at_ms).await;
            let mut pid = workers.lock().unwrap().pid(0);
            if lock_holder {
                // Lock tokens are `<host>:<pid>:<random>:<random>`.
                let mut held: HashMap<u32, u64> = HashMap::new();
                for shard in 0..spec.shards {
                    let key = format!("{NS}:{{{QUEUE}:{shard}}}:lock");
                    if let Ok(redis::Value::BulkString(b)) =
                        redis.lock().unwrap().cmd(&["GET", &key])
                    {
                        let token = String::from_utf8_lossy(&b).into_owned();
                        if let Some(p) = token.split(':').nth(1).and_then(|p| p.parse().ok()) {
                            *held.entry(p).or_default() += 1;
                        }
                    }
                }
                let w = workers.lock().unwrap();
                let ours = (0..w.slots.len()).filter_map(|i| w.pid(i));
                if let Some((p, n)) = ours
                    .map(|p| (p, held.get(&p).copied().unwrap_or(0)))
                    .max_by_key(|x| x.1)
                {
                    pid = Some(p);
                    ev.lock().unwrap().stopped_locks = n;
                }
            }
            if let Some(pid) = pid {
                signal(pid, "STOP");
                let stop = now_ms();
                ev.lock().unwrap().stopped.push(pid);
                sleep(for_ms).await;
                signal(pid, "CONT");
                ev.lock().unwrap().stopped_at.push((pid, (stop, now_ms())));
            }
        }
        Fault::RedisCrash { at_ms, down_ms } => {
            sleep(at_ms).await;
            redis.lock().unwrap().kill();
            ev.lock().unwrap().redis_down_ms = Some(now_ms());
            sleep(down_ms).await;
            let r = tokio::task::spawn_blocking({
                let redis = redis.clone();
                move || redis.lock().unwrap().try_restart()
            })
            .await;
            if !matches!(r, Ok(Ok(()))) {
                ev.lock().unwrap().fault_errors += 1;
            }
            ev.lock().unwrap().redis_up_ms = Some(now_ms());
        }
        Fault::FlushRestart { at_ms } => {
            sleep(at_ms).await;
            if redis.lock().unwrap().cmd(&["SCRIPT", "FLUSH"]).is_err() {
                ev.lock().unwrap().fault_errors += 1;
            }
            sleep(2_000).await;
            let r = tokio::task::spawn_blocking({
                let redis = redis.clone();
                move || {
                    let mut r = redis.lock().unwrap();
                    r.try_restart()
                }
            })
            .await;
            if !matches!(r, Ok(Ok(()))) {
                ev.lock().unwrap().fault_errors += 1;
            }
            ev.lock().unwrap().redis_up_ms = Some(now_ms());
            sleep(2_000).await;
            if redis.lock().unwrap().cmd(&["SCRIPT", "FLUSH"]).is_err() {
                ev.lock().unwrap().fault_errors += 1;
            }
        }
        Fault::ClientKill { every_ms, for_ms } => {
            let end = Instant::now() + Duration::from_millis(for_ms);
            while Instant::now() < end {
                sleep(every_ms).await;
                if redis
                    .lock()
                    .unwrap()
                    .cmd(&["CLIENT", "KILL", "TYPE", "normal"])
                    .is_err()
                {
                    ev.lock().unwrap().fault_errors += 1;
                }
            }
        }
        Fault::Stall { every_ms, for_ms } => {
            let end = Instant::now() + Duration::from_millis(for_ms);
            let mut debug_sleep = true;
            while Instant::now() < end {
                sleep(every_ms).await;
                let r = redis.lock().unwrap();
                // DEBUG SLEEP blocks until Redis wakes; CLIENT PAUSE returns at once.
                let cmd: &[&str] = if debug_sleep {
                    &["DEBUG", "SLEEP", "3"]
                } else {
                    &["CLIENT", "PAUSE", "3000"]
                };
                let res = tokio::task::block_in_place(|| r.cmd(cmd));
                let mut e = ev.lock().unwrap();
                if res.is_err() {
                    e.fault_errors += 1;
                }
                e.stalls += 1;
                debug_sleep = !debug_sleep;
            }
        }
        Fault::StopLockHolder { at_ms, for_ms } => {
            sleep(at_ms).await;
            let lock = format!("{NS}:{{{QUEUE}:0}}:lock");
            let get = |r: &Arc<Mutex<Redis>>| match r.lock().unwrap().cmd(&["GET", &lock]) {
                Ok(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            };
            // The holder's token is `<host>:<pid>:<random>:<random>`.
            let deadline = Instant::now() + Duration::from_secs(20);
            let holder = loop {
                if let Some(t) = get(&redis) {
                    if let Some(pid) = t.split(':').nth(1).and_then(|p| p.parse::<u32>().ok()) {
                        break Some((pid, t));
                    }
                }
                if Instant::now() > deadline {
                    break None;
                }
                sleep(5).await;
            };
            let Some((pid, token)) = holder else {
                ev.lock().unwrap().fault_errors += 1;
                return;
            };
            // Stop it only if it is one of ours (it is: every worker is).
            let ours = {
                let w = workers.lock().unwrap();
                (0..w.slots.len()).any(|i| w.pid(i) == Some(pid))
            };
            if !ours {
                ev.lock().unwrap().fault_errors += 1;
                return;
            }
            signal(pid, "STOP");
            let stopped_at = now_ms();
            {
                let mut e = ev.lock().unwrap();
                e.stopped.push(pid);
                e.lock_holder = Some((pid, token.clone()));
                e.lock_stop_ms = Some(stopped_at);
            }
            let until = Instant::now() + Duration::from_millis(for_ms);
            while Instant::now() < until {
                if ev.lock().unwrap().lock_taken_over_ms.is_none() {
                    if let Some(t) = get(&redis) {
                        if t != token {
                            ev.lock().unwrap().lock_taken_over_ms = Some(now_ms() - stopped_at);
                        }
                    }
                }
                sleep(10).await;
            }
            signal(pid, "CONT");
        }
        Fault::Term { at_ms } => {
            sleep(at_ms).await;
            let mut w = workers.lock().unwrap();
            w.supervise = false;
            // Every worker at once: which of them claimed the tasks is a race (a promoting
            // worker's own fetcher claims first), and the one signalled must hold some.
            let t = now_ms();
            let mut termed = Vec::new();
            for i in 0..w.slots.len() {
                if let Some(pid) = w.pid(i) {
                    signal(pid, "TERM");
                    ev.lock().unwrap().termed.push((pid, t));
                    termed.push(i);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut exited = 0;
            while exited < termed.len() && Instant::now() < deadline {
                exited = termed
                    .iter()
                    .filter(|i| {
                        matches!(
                            w.slots[**i].as_mut().map(|c| c.try_wait()),
                            Some(Ok(Some(_)))
                        )
                    })
                    .count();
                std::thread::sleep(Duration::from_millis(5));
            }
            if exited == termed.len() {
                ev.lock().unwrap().term_exit_ms = Some(now_ms() - t);
            }
            w.supervise = true;
        }
    }
}
