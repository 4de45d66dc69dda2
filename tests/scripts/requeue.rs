//! requeue: dead tasks sent back to run.

use crate::support::*;

struct RequeueCase {
    name: &'static str,
    seed: fn(&str) -> St,
    ids: Vec<&'static str>,
    reply: Vec<scheduler::broker::scripts::RequeueReply>,
    want: fn(&str) -> St,
    msgs: Vec<M>,
}

table_case!(RequeueCase, msgs);

/// requeue moves a dead task to the ready set (attempts 0, due now, error and token kept,
/// `requeued` counted, `r:` when the ready set was empty), refuses a task that is not dead with
/// no change, and drops the leftover id of a deleted task from the dead set.
#[tokio::test]
async fn requeue_transitions() {
    use scheduler::broker::scripts::RequeueReply::{NotDead, NotFound, Requeued};
    let cases = [
        RequeueCase {
            name: "dead: ready now with attempts 0, r: message",
            seed: |_| St::default().task("a", dead_at()).dead("a", 990),
            ids: vec!["a"],
            reply: vec![Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .ready("a", W::Now(ready_score(5, 0)))
                    .stat("requeued", 1)
            },
            msgs: vec![M::R],
        },
        RequeueCase {
            name: "ready set already non-empty: no r: message, counter adds up",
            seed: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", dead_at().with("priority", 9))
                    .ready("x", ready_score(5, 5))
                    .dead("a", 990)
                    .stat("requeued", 2)
            },
            ids: vec!["a"],
            reply: vec![Requeued],
            want: |_| {
                St::default()
                    .drained("0")
                    .task("x", at("ready", 5, 5))
                    .task("a", requeued().with("priority", 9))
                    .ready("a", W::Now(ready_score(9, 0)))
                    .ready("x", ready_score(5, 5))
                    .stat("requeued", 3)
            },
            msgs: vec![],
        },
        RequeueCase {
            name: "scheduled: NotDead, nothing changes",
            seed: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| {
                St::default()
                    .task("a", at("scheduled", 5, FAR))
                    .sched("a", FAR)
            },
            msgs: vec![],
        },
        RequeueCase {
            name: "running: NotDead, nothing changes",
            seed: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| St::default().task("a", running(2, 1)).active("a", FAR),
            msgs: vec![],
        },
        RequeueCase {
            name: "succeeded: NotDead, record and TTL untouched",
            seed: |_| St::default().task_ttl("a", succeeded_at(), 60_000),
            ids: vec!["a"],
            reply: vec![NotDead],
            want: |_| St::default().task_ttl("a", succeeded_at(), 60_000),
            msgs: vec![],
        },
        RequeueCase {
            name: "id in the dead set without a record: NotFound, id dropped",
            seed: |_| St::default().dead("a", 990),
            ids: vec!["a"],
            reply: vec![NotFound],
            want: |_| St::default(),
            msgs: vec![],
        },
        RequeueCase {
            name: "missing: NotFound, nothing created",
            seed: |_| St::default(),
            ids: vec!["a"],
            reply: vec![NotFound],
            want: |_| St::default(),
            msgs: vec![],
        },
        RequeueCase {
            name: "mixed batch: one reply per id, one r: message",
            seed: |_| {
                St::default()
                    .task("a", dead_at())
                    .task("b", at("ready", 5, 5))
                    .task("d", dead_at())
                    .ready("b", ready_score(5, 5))
                    .dead("a", 990)
                    .dead("d", 995)
            },
            ids: vec!["a", "b", "c", "d"],
            reply: vec![Requeued, NotDead, NotFound, Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .task("b", at("ready", 5, 5))
                    .task("d", requeued())
                    .ready("b", ready_score(5, 5))
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("d", W::Now(ready_score(5, 0)))
                    .stat("requeued", 2)
                    .drained("0")
            },
            // No drained flag yet: the workers may not be looking, so they are woken.
            msgs: vec![M::R],
        },
        RequeueCase {
            name: "empty ready set, two requeued: a single r: message",
            seed: |_| {
                St::default()
                    .task("a", dead_at())
                    .task("b", dead_at())
                    .dead("a", 990)
                    .dead("b", 991)
            },
            ids: vec!["a", "b"],
            reply: vec![Requeued, Requeued],
            want: |_| {
                St::default()
                    .task("a", requeued())
                    .task("b", requeued())
                    .ready("a", W::Now(ready_score(5, 0)))
                    .ready("b", W::Now(ready_score(5, 0)))
                    .stat("requeued", 2)
            },
            msgs: vec![M::R],
        },
    ];
    run_table(
        "rqu",
        &cases,
        async |case, s, p| s.requeue(p, &case.ids).await.unwrap(),
        |case, ran| {
            assert_eq!(ran.reply, case.reply, "{}: reply", case.name);
        },
    )
    .await;
}
