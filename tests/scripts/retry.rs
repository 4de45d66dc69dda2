//! retry: failed runs rescheduled with a delay or buried in the dead set.

use crate::support::*;

struct RetryCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<FailItem<'static>>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(RetryCase, msgs);

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
                    .task("a", rescheduled(running(3, 2).failed("boom"), "boom", 5000))
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
                    .task("a", rescheduled(running(3, 3).failed("boom"), "boom", 0))
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
                    .task(
                        "a",
                        rescheduled(running(3, 4).with("lost", 1).failed("boom"), "boom", 0),
                    )
                    .sched("a", W::Now(0))
                    .stat("retried", 1)
            },
            msgs: vec![M::S(W::Now(0))],
        },
        RetryCase {
            name: "cancellation requested while it ran: cancelled with the TTL, not retried",
            seed: |_| {
                St::default()
                    .task("a", running(3, 2).with("cancel", 60_000))
                    .active("a", FAR)
            },
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Cancelled],
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(3, 2)
                            .with("state", "cancelled")
                            .with("error", "boom")
                            .with("finished_at", W::Now(0))
                            .without("worker"),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
            msgs: vec![],
        },
        RetryCase {
            name: "retries exhausted: dead with the error",
            seed: |_| St::default().task("a", running(3, 4)).active("a", FAR),
            items: vec![("a", 3, "boom", Some(5000))],
            reply: vec![Outcome::Dead],
            want: |_| {
                St::default()
                    .task("a", buried(running(3, 4).failed("boom"), "boom"))
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
                    .task("a", buried(running(3, 1).failed("fatal"), "fatal"))
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
                    .task("a", rescheduled(running(3, 1).failed("boom"), "boom", 5000))
                    .task("b", buried(running(1, 4).failed("bang"), "bang"))
                    .sched("x", 1000)
                    .sched("a", W::Now(5000))
                    .dead("b", W::Now(0))
                    .stat("retried", 1)
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
    ];
    run_table(
        "rty",
        &cases,
        async |case, s, p| s.retry(p, &case.items).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}

/// The attempt log keeps the last 10 failed attempts, oldest first: an 11th drops the first; an
/// error is cut to 200 bytes; a log that cannot be read (a hand edit) starts again.
#[tokio::test]
async fn the_attempt_log_is_bounded() {
    let fx = fx().await;
    let p = fx.store.partition("log", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let log: Vec<String> = (1..=10)
        .map(|n| {
            format!(
                r#"{{"attempt":{n},"started_at":{n}00,"failed_at":{n}01,"worker":"w","error":"e{n}"}}"#
            )
        })
        .collect();
    St::default()
        .task(
            "a",
            running(3, 11).with("attempt_log", format!("[{}]", log.join(",")).as_str()),
        )
        .task("b", running(3, 1).with("attempt_log", "not json"))
        .active("a", FAR)
        .active("b", FAR)
        .seed(&mut conn, &p);
    let long = "x".repeat(300);
    s.retry(
        &p,
        &[("a", 3, long.as_str(), Some(0)), ("b", 3, "boom", None)],
    )
    .await
    .unwrap();
    let read = |conn: &mut redis::Connection, id: &str| {
        let raw: Vec<u8> = redis::cmd("HGET")
            .arg(p.keys.task(id))
            .arg("attempt_log")
            .query(conn)
            .unwrap();
        scheduler_core::FailedAttempt::parse_log(&raw)
    };
    let a = read(&mut conn, "a");
    assert_eq!(
        a.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        (2..=11).collect::<Vec<_>>()
    );
    assert_eq!((a[0].started_at, a[0].failed_at), (Some(200), 201));
    assert_eq!(a[9].error, "x".repeat(200));
    assert_eq!((a[9].worker.as_str(), a[9].started_at), ("w1", Some(950)));
    let b = read(&mut conn, "b");
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].attempt, b[0].error.as_str()), (1, "boom"));
}
