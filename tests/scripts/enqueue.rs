//! enqueue: new tasks, scheduled or ready, and the wake-ups they publish.

use crate::support::*;

struct EnqueueCase {
    name: &'static str,
    seed: fn(&str) -> St,
    tasks: Vec<NewTask>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(EnqueueCase, msgs);

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
    run_table(
        "enq",
        &cases,
        async |case, s, p| s.enqueue(p, &case.tasks).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
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
