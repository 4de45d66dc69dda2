//! promote: due tasks moved from the scheduled set to the ready set, never early, each once.

use crate::support::*;

struct PromoteCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    moved: u64,
    next_due: Option<i64>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(PromoteCase, msgs);

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
    run_table(
        "pro",
        &cases,
        async |case, s, p| s.promote(p, case.batch).await.unwrap(),
        |case, ran| {
            let r = &ran.reply;
            assert_eq!(r.moved, case.moved, "{}: moved", case.name);
            assert_eq!(r.next_due_ms, case.next_due, "{}: next due", case.name);
            assert!(
                W::Now(0).matches_int(r.server_now_ms, ran.clock),
                "{}: server now {} outside {:?}",
                case.name,
                r.server_now_ms,
                ran.clock
            );
        },
    )
    .await;
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

/// promote with a lease count takes the earliest due tasks straight into leases for the caller
/// (as claim does: running, token and attempts + 1, worker tag, lease deadline) and moves the
/// rest of what is due to the ready set, waking the workers for those only; a corrupt record
/// among them is buried and does not use up the caller's room.
#[tokio::test]
async fn promote_leases_the_earliest_due_tasks_to_the_caller() {
    let fx = fx().await;
    let seed = St::default()
        .task("a", at("scheduled", 2, 1000))
        .task("bad", at("scheduled", 5, 1500).with("timeout_ms", "soon"))
        .task(
            "b",
            at("scheduled", 9, 2000)
                .with("token", 4)
                .with("attempts", 2),
        )
        .task("c", at("scheduled", 5, 3000))
        .task("later", at("scheduled", 5, FAR))
        .sched("a", 1000)
        .sched("bad", 1500)
        .sched("b", 2000)
        .sched("c", 3000)
        .sched("later", FAR);
    let ran = run(&fx, "lease", &seed, async |s, p| {
        s.promote_claim(p, 100, 2, 30_000, "w1").await.unwrap()
    })
    .await;
    let (r, tasks) = &ran.reply;
    assert_eq!((r.moved, r.corrupt, r.next_due_ms), (1, 1, Some(FAR)));
    let got: Vec<(&str, i64, u32, i64)> = tasks
        .iter()
        .map(|t| (t.id.as_str(), t.token, t.attempt, t.due_ms))
        .collect();
    assert_eq!(got, [("a", 1, 1, 1000), ("b", 5, 3, 2000)]);
    assert_eq!(tasks[0].args, ARGS);
    let want = St::default()
        .task("a", claimed(at("scheduled", 2, 1000), 1, 1))
        .task("b", claimed(at("scheduled", 9, 2000), 5, 3))
        .task(
            "bad",
            at("dead", 5, 1500)
                .with("timeout_ms", "soon")
                .with("finished_at", W::Now(0))
                .with("error", "corrupt record: timeout_ms \"soon\""),
        )
        .task("c", at("ready", 5, 3000))
        .task("later", at("scheduled", 5, FAR))
        .sched("later", FAR)
        .ready("c", ready_score(5, 3000))
        .active("a", W::Now(30_000))
        .active("b", W::Now(30_000))
        .dead("bad", W::Now(0))
        .stat("promoted", 3);
    let mut conn = fx.server.conn();
    assert_state(
        &mut conn,
        &ran.p,
        &want,
        ran.clock,
        "two leased, one ready, one buried",
    );
    assert_msgs(
        &ran.msgs,
        &[M::R],
        ran.clock,
        "only the ready task wakes the workers",
    );
}

struct RideCase {
    name: &'static str,
    seed: fn(&str) -> St,
    acks: Vec<AckItem<'static>>,
    acked: Vec<Outcome>,
    leased: Vec<&'static str>,
    want: fn(&str) -> St,
}

table_case!(RideCase);

/// Acks riding on a promote are written exactly as ack.lua writes them (fenced by the token,
/// result and TTL, out of the active set, `succeeded` counted; a stale one refused and a
/// repeated one answered 1 with no change), in the same call that promotes and leases.
#[tokio::test]
async fn acks_ride_on_a_promote() {
    let cases = [
        RideCase {
            name: "an ack and a lease in one call",
            seed: |_| {
                St::default()
                    .task("done", running(2, 1))
                    .active("done", FAR)
                    .task("next", at("scheduled", 5, 1000))
                    .sched("next", 1000)
            },
            acks: vec![("done", 2, b"\xa2ok")],
            acked: vec![Outcome::Done],
            leased: vec!["next"],
            want: |_| {
                St::default()
                    .task_ttl(
                        "done",
                        succeeded(running(2, 1)).with("result", &b"\xa2ok"[..]),
                        60_000,
                    )
                    .task("next", claimed(at("scheduled", 5, 1000), 1, 1))
                    .active("next", W::Now(30_000))
                    .stat("succeeded", 1)
                    .stat("promoted", 1)
            },
        },
        RideCase {
            name: "stale and repeated acks, nothing due",
            seed: |_| {
                St::default()
                    .task("lost", running(3, 2))
                    .active("lost", FAR)
                    .task("again", succeeded_at())
            },
            acks: vec![("lost", 2, b""), ("again", 2, b"")],
            acked: vec![Outcome::StaleLease, Outcome::Done],
            leased: vec![],
            want: |_| {
                St::default()
                    .task("lost", running(3, 2))
                    .active("lost", FAR)
                    .task("again", succeeded_at())
            },
        },
    ];
    run_table(
        "ride",
        &cases,
        async |case, s, p| {
            let riders = Riders {
                acks: &case.acks,
                result_ttl_ms: 60_000,
            };
            s.promote_claim_ack(p, 100, 10, 30_000, "w1", riders)
                .await
                .unwrap()
        },
        |case, ran| {
            let (_, tasks, acked) = &ran.reply;
            let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, case.leased, "{}: leased", case.name);
            assert_eq!(acked, &case.acked, "{}: acked", case.name);
        },
    )
    .await;
}
