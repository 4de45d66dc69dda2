//! cancel_run: a worker ends a run whose cancellation was requested.

use crate::support::*;

struct CancelRunCase {
    name: &'static str,
    seed: fn(&str) -> St,
    token: i64,
    reply: Outcome,
    want: fn(&str) -> St,
}

table_case!(CancelRunCase);

/// cancel_run ends a running task under its token as `cancelled` (out of the active set, the
/// reason in `error`, counted, expiring after the TTL recorded by cancel.lua, or the default
/// given when none is), and changes nothing for a stale token or a task no longer running.
#[tokio::test]
async fn cancel_run_transitions() {
    let cases = [
        CancelRunCase {
            name: "running under the token: cancelled with the recorded TTL",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("cancel", 60_000))
                    .active("a", FAR)
            },
            token: 3,
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(3, 1)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0))
                            .with("error", "stopped")
                            .without("worker"),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelRunCase {
            name: "no TTL recorded: the default",
            seed: |_| St::default().task("a", running(3, 1)).active("a", FAR),
            token: 3,
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(3, 1)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0))
                            .with("error", "stopped")
                            .without("worker"),
                        30_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelRunCase {
            name: "stale token: nothing changes",
            seed: |_| {
                St::default()
                    .task("a", running(4, 2).with("cancel", 60_000))
                    .active("a", FAR)
            },
            token: 3,
            reply: Outcome::StaleLease,
            want: |_| {
                St::default()
                    .task("a", running(4, 2).with("cancel", 60_000))
                    .active("a", FAR)
            },
        },
        CancelRunCase {
            name: "succeeded already: nothing changes",
            seed: |_| St::default().task("a", succeeded_at()),
            token: 2,
            reply: Outcome::StaleLease,
            want: |_| St::default().task("a", succeeded_at()),
        },
    ];
    run_table(
        "cru",
        &cases,
        async |case, s, p| {
            s.cancel_run(p, "a", case.token, "stopped", 30_000)
                .await
                .unwrap()
        },
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
