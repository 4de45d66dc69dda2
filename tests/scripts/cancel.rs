//! cancel: tasks cancelled in every state.

use crate::support::*;

struct CancelCase {
    name: &'static str,
    seed: fn(&str) -> St,
    ttl: u64,
    reply: CancelReply,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(CancelCase, msgs);

/// cancel withdraws a scheduled or ready task (state cancelled with a TTL, or deleted with TTL 0,
/// counted), records a cancellation request on a running task and publishes it to its worker
/// (Running), leaves a finished one alone (Finished), and reports a missing one (NotFound).
#[tokio::test]
async fn cancel_transitions() {
    let cases = [
        CancelCase {
            name: "scheduled: cancelled, expires after the TTL",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::Cancelled,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        at("cancelled", 5, FAR).with("finished_at", W::Now(0)),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelCase {
            name: "ready: cancelled, expires after the TTL",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000))
                    .ready("a", ready_score(5, 1000))
            },
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::Cancelled,
            want: |_| {
                St::default()
                    .task_ttl(
                        "a",
                        ready_task(5, 1000)
                            .with("state", "cancelled")
                            .with("finished_at", W::Now(0)),
                        60_000,
                    )
                    .stat("cancelled", 1)
            },
        },
        CancelCase {
            name: "ready with TTL 0: deleted",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000))
                    .ready("a", ready_score(5, 1000))
                    .stat("cancelled", 2)
            },
            ttl: 0,
            msgs: vec![],
            reply: CancelReply::Cancelled,
            want: |_| St::default().stat("cancelled", 3),
        },
        CancelCase {
            name: "running: Running, the request recorded with the TTL and published",
            seed: |_| St::default().task("a", running(1, 1)).active("a", FAR),
            ttl: 60_000,
            msgs: vec![M::C("a")],
            reply: CancelReply::Running,
            want: |_| {
                St::default()
                    .task("a", running(1, 1).with("cancel", 60_000))
                    .active("a", FAR)
            },
        },
        CancelCase {
            name: "succeeded: Finished, nothing changes",
            seed: |_| St::default().task("a", succeeded_at()),
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::Finished,
            want: |_| St::default().task("a", succeeded_at()),
        },
        CancelCase {
            name: "dead: Finished, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", Rec::new("dead").with("finished_at", 990))
                    .dead("a", 990)
            },
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::Finished,
            want: |_| {
                St::default()
                    .task("a", Rec::new("dead").with("finished_at", 990))
                    .dead("a", 990)
            },
        },
        CancelCase {
            name: "cancelled before: Finished, nothing changes",
            seed: |_| St::default().task("a", Rec::new("cancelled").with("finished_at", 990)),
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::Finished,
            want: |_| St::default().task("a", Rec::new("cancelled").with("finished_at", 990)),
        },
        CancelCase {
            name: "missing: NotFound, nothing created",
            seed: |_| St::default(),
            ttl: 60_000,
            msgs: vec![],
            reply: CancelReply::NotFound,
            want: |_| St::default(),
        },
    ];
    run_table(
        "cnl",
        &cases,
        async |case, s, p| s.cancel(p, "a", case.ttl).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
