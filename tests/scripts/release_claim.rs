//! release_claim: tasks claimed but never started handed back.

use crate::support::*;

struct ReleaseClaimCase {
    name: &'static str,
    seed: fn(&str) -> St,
    tag: &'static str,
    reply: u64,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(ReleaseClaimCase, msgs);

/// release_claim hands back exactly the running tasks whose `worker` is the lost claim's tag
/// (attempts - 1, token kept, out of active, into ready); tasks of other claims, expired leases
/// and tasks no longer running are left alone.
#[tokio::test]
async fn release_claim_transitions() {
    let cases = [
        ReleaseClaimCase {
            name: "a task of the tag whose cancellation was requested: cancelled, not counted",
            seed: |_| {
                St::default()
                    .task(
                        "a",
                        running(3, 1).with("worker", "w1#7").with("cancel", 60_000),
                    )
                    .active("a", FAR)
            },
            tag: "w1#7",
            reply: 0,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(3, 1)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0))
                            .with(
                                "error",
                                "its claim was lost after cancellation was requested",
                            )
                            .without("worker"),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
            msgs: vec![],
        },
        ReleaseClaimCase {
            name: "the tag's running tasks go back; another claim's task stays",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task(
                        "b",
                        running(2, 2).with("worker", "w1#7").with("priority", 8),
                    )
                    .task("c", running(5, 1).with("worker", "w1#8"))
                    .active("a", FAR)
                    .active("b", FAR)
                    .active("c", FAR)
            },
            tag: "w1#7",
            reply: 2,
            want: |_| {
                St::default()
                    .task("a", running(3, 0).with("state", "ready").without("worker"))
                    .task(
                        "b",
                        running(2, 1)
                            .with("priority", 8)
                            .with("state", "ready")
                            .without("worker"),
                    )
                    .task("c", running(5, 1).with("worker", "w1#8"))
                    .active("c", FAR)
                    .ready("b", W::Now(ready_score(8, 0)))
                    .ready("a", W::Now(ready_score(5, 0)))
            },
            msgs: vec![M::R],
        },
        ReleaseClaimCase {
            name: "an expired lease is the reaper's; a finished task is left; nothing to do: 0",
            seed: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task("b", succeeded_at().with("worker", "w1#7"))
                    .active("a", 500)
            },
            tag: "w1#7",
            reply: 0,
            want: |_| {
                St::default()
                    .task("a", running(3, 1).with("worker", "w1#7"))
                    .task("b", succeeded_at().with("worker", "w1#7"))
                    .active("a", 500)
            },
            msgs: vec![],
        },
    ];
    run_table(
        "relc",
        &cases,
        async |case, s, p| s.release_claim(p, case.tag, 100).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
