//! ack: running tasks finished, their results kept for a TTL.

use crate::support::*;

struct AckCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<AckItem<'static>>,
    ttl: u64,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
}

table_case!(AckCase);

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
    run_table(
        "ack",
        &cases,
        async |case, s, p| {
            s.ack_many(&[(p, case.items.clone())], case.ttl)
                .await
                .unwrap()
        },
        |case, ran| {
            assert_eq!(ran.reply, vec![case.reply.clone()], "{}: reply", case.name);
        },
    )
    .await;
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
