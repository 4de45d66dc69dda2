//! reap: expired leases requeued or buried.

use crate::support::*;

struct ReapCase {
    name: &'static str,
    seed: fn(&str) -> St,
    batch: u32,
    requeued: u64,
    buried: u64,
    next_deadline: Option<i64>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(ReapCase, msgs);

/// reap sends expired leases with attempts left back to ready (error "lease expired"), buries
/// those without, leaves unexpired leases alone, honours the batch, only unlists tasks no longer
/// running, and replies with the next lease deadline.
#[tokio::test]
async fn reap_transitions() {
    let cases = [
        ReapCase {
            name: "expired with attempts left: back to ready; unexpired untouched",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1).with("priority", 4))
                    .task("b", running(1, 1))
                    .active("a", 1000)
                    .active("b", FAR)
            },
            batch: 100,
            requeued: 1,
            buried: 0,
            next_deadline: Some(FAR),
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("priority", 4)
                            .failed("lease expired: worker lost during attempt 1")
                            .with("state", "ready")
                            .with("lost", 1)
                            .with("error", "lease expired: worker lost during attempt 1")
                            .without("worker"),
                    )
                    .task("b", running(1, 1))
                    .ready("a", W::Now(ready_score(4, 0)))
                    .active("b", FAR)
                    .stat("reaped", 1)
            },
            msgs: vec![M::R],
        },
        ReapCase {
            name: "cancellation requested, then the worker lost: cancelled with the TTL",
            seed: |_| {
                St::default()
                    .task("a", running(2, 1).with("cancel", 60_000))
                    .active("a", 1000)
            },
            batch: 100,
            requeued: 0,
            buried: 0,
            next_deadline: None,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        running(2, 1)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0))
                            .with("error", "lease expired after cancellation was requested")
                            .without("worker"),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
            msgs: vec![],
        },
        ReapCase {
            name: "handler retries used up but no lease lost before: back to ready, lost 1",
            seed: |_| St::default().task("a", running(2, 4)).active("a", 1000),
            batch: 100,
            requeued: 1,
            buried: 0,
            next_deadline: None,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 4)
                            .failed("lease expired: worker lost during attempt 4")
                            .with("state", "ready")
                            .with("lost", 1)
                            .with("error", "lease expired: worker lost during attempt 4")
                            .without("worker"),
                    )
                    .ready("a", W::Now(ready_score(5, 0)))
                    .stat("reaped", 1)
            },
            msgs: vec![M::R],
        },
        ReapCase {
            name: "lost == max_lost before this expiry: dead, the reason names the lost leases",
            seed: |_| {
                St::default()
                    .task("a", running(2, 3).with("lost", 2))
                    .active("a", 1000)
            },
            batch: 100,
            requeued: 0,
            buried: 1,
            next_deadline: None,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 3)
                            .failed(
                                "lease expired 3 times: worker lost during 3 of 3 attempts \
                                 (max_lost_leases = 2)",
                            )
                            .with("lost", 3)
                            .with("state", "dead")
                            .with("finished_at", W::Now(0))
                            .with(
                                "error",
                                "lease expired 3 times: worker lost during 3 of 3 attempts \
                                 (max_lost_leases = 2)",
                            )
                            .without("worker"),
                    )
                    .dead("a", W::Now(0))
                    .stat("dead", 1)
            },
            msgs: vec![],
        },
        ReapCase {
            name: "only unexpired leases: nothing changes",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            batch: 100,
            requeued: 0,
            buried: 0,
            next_deadline: Some(FAR),
            want: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            msgs: vec![],
        },
        ReapCase {
            name: "batch limit: earliest deadlines first, next deadline already past",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("a", running(1, 1))
                    .task("b", running(1, 1))
                    .task("c", running(1, 1))
                    .task("x", ready_task(9, 1))
                    .ready("x", ready_score(9, 1))
                    .active("a", 1000)
                    .active("b", 2000)
                    .active("c", 3000)
            },
            batch: 2,
            requeued: 2,
            buried: 0,
            next_deadline: Some(3000),
            want: |_| {
                let lost = |r: Rec| {
                    r.failed("lease expired: worker lost during attempt 1")
                        .with("state", "ready")
                        .with("lost", 1)
                        .with("error", "lease expired: worker lost during attempt 1")
                        .without("worker")
                };
                St::default()
                    .drained("0")
                    .task("a", lost(running(1, 1)))
                    .task("b", lost(running(1, 1)))
                    .task("c", running(1, 1))
                    .task("x", ready_task(9, 1))
                    .ready("x", ready_score(9, 1))
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("b", W::Now(ready_score(5, 0)))
                    .active("c", 3000)
                    .stat("reaped", 2)
            },
            // The workers are still claiming (drained 0).
            msgs: vec![],
        },
        ReapCase {
            name: "no longer running (acked, or hash gone): only removed from active",
            seed: |_| {
                St::default()
                    .task("a", succeeded_at())
                    .active("a", 1000)
                    .active("ghost", 1500)
            },
            batch: 100,
            requeued: 0,
            buried: 0,
            next_deadline: None,
            want: |_| St::default().task("a", succeeded_at()),
            msgs: vec![],
        },
    ];
    run_table(
        "rea",
        &cases,
        async |case, s, p| s.reap(p, case.batch, MAX_LOST).await.unwrap(),
        |case, ran| {
            let r = &ran.reply;
            assert_eq!(
                (r.requeued, r.buried, r.next_deadline_ms),
                (case.requeued, case.buried, case.next_deadline),
                "{}: reply",
                case.name
            );
        },
    )
    .await;
}
