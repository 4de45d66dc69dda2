//! claim: ready tasks taken by priority then age, under a lease.

use crate::support::*;

struct ClaimCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    lease: u64,
    /// (id, token, attempt, due ms) of each task claimed, in order.
    claimed: Vec<(&'static str, i64, u32, i64)>,
    want: fn(&str) -> St,
}

table_case!(ClaimCase);

/// claim takes the highest priority, then oldest, ready tasks up to the batch; increments token
/// and attempts; marks them running under the worker with a lease of now + lease; and drops ids
/// whose hash is gone or whose state is not `ready`.
#[tokio::test]
async fn claim_transitions() {
    let cases = [
        ClaimCase {
            name: "priority then age, batch limit, token and attempts incremented",
            seed: |_| {
                St::default()
                    .task("lo_old", ready_task(1, 1000))
                    .task("hi_new", ready_task(8, 5000))
                    .task("hi_old", ready_task(8, 2000))
                    // Claimed twice before (a lost lease): token 4, attempts 2.
                    .task(
                        "mid",
                        ready_task(5, 1500)
                            .with("token", 4)
                            .with("attempts", 2)
                            .with("error", "lease expired: worker lost during attempt 2"),
                    )
                    .ready("hi_old", ready_score(8, 2000))
                    .ready("hi_new", ready_score(8, 5000))
                    .ready("mid", ready_score(5, 1500))
                    .ready("lo_old", ready_score(1, 1000))
            },
            batch: 3,
            lease: 10_000,
            claimed: vec![
                ("hi_old", 1, 1, 2000),
                ("hi_new", 1, 1, 5000),
                ("mid", 5, 3, 1500),
            ],
            want: |_| {
                St::default()
                    .task("lo_old", ready_task(1, 1000))
                    .task("hi_new", claimed(ready_task(8, 5000), 1, 1))
                    .task("hi_old", claimed(ready_task(8, 2000), 1, 1))
                    .task(
                        "mid",
                        claimed(ready_task(5, 1500), 5, 3)
                            .with("error", "lease expired: worker lost during attempt 2"),
                    )
                    .ready("lo_old", ready_score(1, 1000))
                    // Equal deadlines: Redis orders members lexicographically.
                    .active("hi_new", W::Now(10_000))
                    .active("hi_old", W::Now(10_000))
                    .active("mid", W::Now(10_000))
            },
        },
        ClaimCase {
            name: "ids whose hash is gone or state is not ready are dropped",
            seed: |_| {
                St::default()
                    .task("c", Rec::new("cancelled").with("finished_at", 950))
                    .task("a", ready_task(5, 1000))
                    .ready("ghost", 1)
                    .ready("c", 2)
                    .ready("a", ready_score(5, 1000))
            },
            batch: 10,
            lease: 30_000,
            claimed: vec![("a", 1, 1, 1000)],
            want: |_| {
                St::default()
                    .task("c", Rec::new("cancelled").with("finished_at", 950))
                    .task("a", claimed(ready_task(5, 1000), 1, 1))
                    .active("a", W::Now(30_000))
            },
        },
        ClaimCase {
            name: "empty ready set: nothing claimed, server now only",
            seed: |_| St::default(),
            batch: 10,
            lease: 30_000,
            claimed: vec![],
            want: |_| St::default(),
        },
    ];
    run_table(
        "clm",
        &cases,
        async |case, s, p| s.claim(p, case.batch, case.lease, "w1").await.unwrap(),
        |case, ran| {
            let want: Vec<Claimed> = case
                .claimed
                .iter()
                .map(|&(id, token, attempt, due_ms)| Claimed {
                    id: id.into(),
                    token,
                    attempt,
                    name: "job".into(),
                    args: ARGS.to_vec(),
                    headers: vec![],
                    max_retries: 3,
                    timeout_ms: 30_000,
                    due_ms,
                    lost: 0,
                })
                .collect();
            assert_eq!(ran.reply.tasks, want, "{}: claimed", case.name);
            assert!(
                W::Now(0).matches_int(ran.reply.server_now_ms, ran.clock),
                "{}: server now",
                case.name
            );
        },
    )
    .await;
}
