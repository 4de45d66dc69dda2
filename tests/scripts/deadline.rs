//! Deadlines (`expires`): stored by enqueue, refused when passed or before the due time, and
//! enforced when a task would start (claim, a leasing promote), when it is promoted, and when a
//! retry would start after it.

use crate::support::*;

/// How long the record of an expired task is kept (`defaults::EXPIRED_TTL`).
const EXPIRED_TTL: i64 = 24 * 3600 * 1000;

/// `rec` as claim, promote or retry leave it when its deadline is passed: `expired` now, with
/// the reason, no worker.
fn expired(rec: Rec, why: &str) -> Rec {
    rec.with("state", "expired")
        .with("finished_at", W::Now(0))
        .with("error", why)
        .without("worker")
}

fn with_deadline(id: &str, due: Due, expires: Due) -> NewTask {
    NewTask {
        expires: Some(expires),
        ..new_task(id, due, 5)
    }
}

struct EnqueueCase {
    name: &'static str,
    seed: fn(&str) -> St,
    tasks: Vec<NewTask>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(EnqueueCase, msgs);

/// enqueue stores the deadline as `expires` (server now + a duration, or the moment given),
/// refuses one that is passed or before the due time with -3 and writes nothing for that task,
/// and writes no `expires` field for a task of the same call without a deadline.
#[tokio::test]
async fn enqueue_deadlines() {
    use Due::{At, Delay};
    let cases = [
        EnqueueCase {
            name: "a duration: expires at server now + it; a moment: as given",
            seed: |_| St::default(),
            tasks: vec![
                with_deadline("a", Delay(60_000), Delay(90_000)),
                with_deadline("b", Delay(60_000), At(FAR)),
                new_task("c", Delay(60_000), 5),
            ],
            reply: vec![Outcome::Done, Outcome::Done, Outcome::Done],
            want: |_| {
                St::default()
                    .task(
                        "a",
                        enqueued("scheduled", 5, W::Now(60_000)).with("expires", W::Now(90_000)),
                    )
                    .task(
                        "b",
                        enqueued("scheduled", 5, W::Now(60_000)).with("expires", FAR),
                    )
                    .task("c", enqueued("scheduled", 5, W::Now(60_000)))
                    .sched("a", W::Now(60_000))
                    .sched("b", W::Now(60_000))
                    .sched("c", W::Now(60_000))
                    .stat("enqueued", 3)
            },
            msgs: vec![M::S(W::Now(60_000))],
        },
        EnqueueCase {
            name: "passed, or before the due time: -3 and nothing written for it",
            seed: |_| St::default(),
            tasks: vec![
                with_deadline("past", Delay(0), At(1000)),
                with_deadline("early", Delay(60_000), Delay(30_000)),
                with_deadline("ok", Delay(0), Delay(30_000)),
            ],
            reply: vec![
                Outcome::DeadlinePassed,
                Outcome::DeadlinePassed,
                Outcome::Done,
            ],
            want: |_| {
                St::default()
                    .task(
                        "ok",
                        enqueued("ready", 5, W::Now(0)).with("expires", W::Now(30_000)),
                    )
                    .ready("ok", W::Now(ready_score(5, 0)))
                    .stat("enqueued", 1)
            },
            msgs: vec![M::R],
        },
    ];
    run_table(
        "dle",
        &cases,
        async |case, s, p| s.enqueue(p, &case.tasks).await.unwrap(),
        |case, ran| assert_eq!(ran.reply, case.reply, "{}: reply", case.name),
    )
    .await;
}

struct ClaimCase {
    name: &'static str,
    seed: fn(&str) -> St,
    /// Ids claimed, in order.
    claimed: Vec<&'static str>,
    expired: u32,
    want: fn(&str) -> St,
}

table_case!(ClaimCase);

/// claim ends a ready task past its deadline `expired` (counted, kept for the TTL, never
/// leased), and leases one whose deadline is still ahead.
#[tokio::test]
async fn claim_expires_tasks_past_their_deadline() {
    let cases = [ClaimCase {
        name: "past deadline: expired; deadline ahead: claimed",
        seed: |_| {
            St::default()
                .task("late", ready_task(5, 1000).with("expires", 2000))
                .task("fine", ready_task(5, 1500).with("expires", FAR))
                .ready("late", ready_score(5, 1000))
                .ready("fine", ready_score(5, 1500))
        },
        claimed: vec!["fine"],
        expired: 1,
        want: |_| {
            St::default()
                .task_ttl(
                    "late",
                    expired(
                        ready_task(5, 1000).with("expires", 2000),
                        "deadline 2000 passed before the task started",
                    ),
                    EXPIRED_TTL,
                )
                .task(
                    "fine",
                    claimed(ready_task(5, 1500).with("expires", FAR), 1, 1),
                )
                .active("fine", W::Now(30_000))
                .stat("expired", 1)
        },
    }];
    run_table(
        "dlc",
        &cases,
        async |_, s, p| s.claim(p, 10, 30_000, "w1").await.unwrap(),
        |case, ran| {
            let ids: Vec<&str> = ran.reply.tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, case.claimed, "{}: claimed", case.name);
            assert_eq!(ran.reply.expired, case.expired, "{}: expired", case.name);
        },
    )
    .await;
}

struct PromoteCase {
    name: &'static str,
    seed: fn(&str) -> St,
    /// Tasks leased to the caller.
    want_leased: u32,
    leased: Vec<&'static str>,
    moved: u64,
    expired: u64,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(PromoteCase, msgs);

/// promote ends a due task past its deadline `expired` whether it would have leased it to the
/// caller or moved it to the ready set, and moves or leases the others.
#[tokio::test]
async fn promote_expires_tasks_past_their_deadline() {
    let seed = |_: &str| {
        St::default()
            .task("late", at("scheduled", 5, 1000).with("expires", 1500))
            .task("fine", at("scheduled", 5, 1100).with("expires", FAR))
            .sched("late", 1000)
            .sched("fine", 1100)
    };
    let cases = [
        PromoteCase {
            name: "moving to the ready set",
            seed,
            want_leased: 0,
            leased: vec![],
            moved: 1,
            expired: 1,
            want: |_| {
                St::default()
                    .task_ttl(
                        "late",
                        expired(
                            at("scheduled", 5, 1000).with("expires", 1500),
                            "deadline 1500 passed before the task started",
                        ),
                        EXPIRED_TTL,
                    )
                    .task("fine", at("ready", 5, 1100).with("expires", FAR))
                    .ready("fine", ready_score(5, 1100))
                    .drained("0")
                    .stat("promoted", 1)
                    .stat("expired", 1)
            },
            msgs: vec![M::R],
        },
        PromoteCase {
            name: "leasing to the caller",
            seed,
            want_leased: 10,
            leased: vec!["fine"],
            moved: 0,
            expired: 1,
            want: |_| {
                St::default()
                    .task_ttl(
                        "late",
                        expired(
                            at("scheduled", 5, 1000).with("expires", 1500),
                            "deadline 1500 passed before the task started",
                        ),
                        EXPIRED_TTL,
                    )
                    .task(
                        "fine",
                        claimed(at("scheduled", 5, 1100).with("expires", FAR), 1, 1),
                    )
                    .active("fine", W::Now(30_000))
                    .stat("promoted", 1)
                    .stat("expired", 1)
            },
            msgs: vec![],
        },
    ];
    run_table(
        "dlp",
        &cases,
        async |case, s, p| {
            s.promote_claim(p, 100, case.want_leased, 30_000, "w1")
                .await
                .unwrap()
        },
        |case, ran| {
            let (r, tasks) = &ran.reply;
            let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, case.leased, "{}: leased", case.name);
            assert_eq!(r.moved, case.moved, "{}: moved", case.name);
            assert_eq!(r.expired, case.expired, "{}: expired", case.name);
        },
    )
    .await;
}

struct RetryCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<FailItem<'static>>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(RetryCase, msgs);

/// retry ends a task `expired` when its retry would start after its deadline (reply 5, no
/// scheduled entry, no wake-up), retries it as usual when the retry starts before, and a
/// repeated report of an expired task under the same token replies 5 again and changes nothing.
#[tokio::test]
async fn retry_after_the_deadline_expires_the_task() {
    let cases = [
        RetryCase {
            name: "retry due after the deadline: expired",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("expires", 1500))
                    .active("a", FAR)
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Expired],
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        expired(
                            running(3, 1).with("expires", 1500),
                            "the run failed: boom; its retry would start after the deadline 1500",
                        ),
                        EXPIRED_TTL,
                    )
                    .stat("expired", 1)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "retry due before the deadline: retried",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("expires", FAR))
                    .active("a", FAR)
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task(
                        "a",
                        rescheduled(
                            running(3, 1).with("expires", FAR).failed("boom"),
                            "boom",
                            5000,
                        ),
                    )
                    .sched("a", W::Now(5000))
                    .stat("retried", 1)
            },
            msgs: vec![M::S(W::Now(5000))],
        },
        RetryCase {
            name: "a repeated report of an expired task: 5, nothing changes",
            seed: |_| {
                St::default().task(
                    "a",
                    running(3, 1)
                        .with("state", "expired")
                        .with("finished_at", 990)
                        .without("worker"),
                )
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Expired],
            want: |_| {
                St::default().task(
                    "a",
                    running(3, 1)
                        .with("state", "expired")
                        .with("finished_at", 990)
                        .without("worker"),
                )
            },
            msgs: vec![],
        },
    ];
    run_table(
        "dlr",
        &cases,
        async |case, s, p| s.retry(p, &case.items).await.unwrap(),
        |case, ran| assert_eq!(ran.reply, case.reply, "{}: reply", case.name),
    )
    .await;
}
