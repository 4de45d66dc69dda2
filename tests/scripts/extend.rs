//! extend: leases of running tasks pushed back.

use crate::support::*;

struct ExtendCase {
    name: &'static str,
    seed: fn(&str) -> St,
    lease: u64,
    items: Vec<(&'static str, i64)>,
    reply: Vec<Outcome>,
    want: fn(&str) -> St,
}

table_case!(ExtendCase);

/// extend sets the lease deadline to now + lease only for a running task with the matching
/// token; anything else replies -1 and changes nothing.
#[tokio::test]
async fn extend_transitions() {
    let cases = [
        ExtendCase {
            name: "matching token: deadline renewed",
            seed: |_| St::default().task("a", running(2, 1)).active("a", 9000),
            lease: 20_000,
            items: vec![("a", 2)],
            reply: vec![Outcome::Done],
            want: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .active("a", W::Now(20_000))
            },
        },
        ExtendCase {
            name: "cancellation requested: deadline renewed, reply Cancelled",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1).with("cancel", 60_000))
                    .active("a", 9000)
            },
            lease: 20_000,
            items: vec![("a", 2)],
            reply: vec![Outcome::Cancelled],
            want: |_| {
                St::default()
                    .task("a", running(2, 1).with("cancel", 60_000))
                    .active("a", W::Now(20_000))
            },
        },
        ExtendCase {
            name: "stale token: -1, deadline unchanged",
            seed: |_| St::default().task("a", running(2, 1)).active("a", 9000),
            lease: 20_000,
            items: vec![("a", 1)],
            reply: vec![Outcome::StaleLease],
            want: |_| St::default().task("a", running(2, 1)).active("a", 9000),
        },
        ExtendCase {
            name: "not running: -1, not added to active",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
            lease: 20_000,
            items: vec![("a", 2)],
            reply: vec![Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
        },
        ExtendCase {
            name: "mixed batch: only the matching token renewed",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .task("b", running(7, 1))
                    .active("a", 9000)
                    .active("b", 9500)
            },
            lease: 20_000,
            items: vec![("a", 2), ("b", 6)],
            reply: vec![Outcome::Done, Outcome::StaleLease],
            want: |_| {
                St::default()
                    .task("a", running(2, 1))
                    .task("b", running(7, 1))
                    .active("b", 9500)
                    .active("a", W::Now(20_000))
            },
        },
    ];
    run_table(
        "ext",
        &cases,
        async |case, s, p| s.extend(p, case.lease, &case.items).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
