//! release: running tasks handed back to the ready set at shutdown.

use crate::support::*;

struct ReleaseCase {
    name: &'static str,
    seed: fn(&str) -> St,
    items: Vec<(&'static str, i64)>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(ReleaseCase, msgs);

/// release hands a running task with the matching token back to ready at once, without counting
/// the attempt, out of the active set; a stale token replies -1 and changes nothing.
#[tokio::test]
async fn release_transitions() {
    let cases = [
        ReleaseCase {
            name: "matching token: back to ready, attempts - 1, out of active",
            seed: |_| {
                St::default()
                    .task("a", running(3, 2).with("priority", 6))
                    .active("a", FAR)
            },
            items: vec![("a", 3)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(3, 1)
                            .with("priority", 6)
                            .with("state", "ready")
                            .without("worker"),
                    )
                    .ready("a", W::Now(ready_score(6, 0)))
            },
            msgs: vec![M::R],
        },
        ReleaseCase {
            name: "cancellation requested: cancelled with the TTL, not handed back",
            seed: |_| {
                St::default()
                    .task("a", running(3, 2).with("cancel", 60_000))
                    .active("a", FAR)
            },
            items: vec![("a", 3)],
            reply: vec![Outcome::Cancelled],
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(3, 2)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0))
                            .with(
                                "error",
                                "handed back at shutdown after cancellation was requested",
                            )
                            .without("worker"),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
            msgs: vec![],
        },
        ReleaseCase {
            name: "stale token: -1, nothing changes",
            seed: |_| St::default().task("a", running(3, 2)).active("a", FAR),
            items: vec![("a", 2)],
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(3, 2)).active("a", FAR),
            msgs: vec![],
        },
        ReleaseCase {
            name: "ready set not empty: no r: message",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", ready_task(5, 1))
                    .task("a", running(1, 1))
                    .ready("x", ready_score(5, 1))
                    .active("a", FAR)
            },
            items: vec![("a", 1)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", ready_task(5, 1))
                    .task("a", running(1, 0).with("state", "ready").without("worker"))
                    .ready("x", ready_score(5, 1))
                    .ready("a", W::Now(ready_score(5, 0)))
            },
            msgs: vec![],
        },
    ];
    run_table(
        "rel",
        &cases,
        async |case, s, p| s.release(p, &case.items).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
