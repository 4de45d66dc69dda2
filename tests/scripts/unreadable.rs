//! Records that cannot be read, stray ids, wake-ups (issue 9, point 5).

use crate::support::*;

/// What a script makes of a record it cannot read: dead now with the reason.
fn corrupt(rec: Rec, why: &str) -> Rec {
    rec.with("state", "dead")
        .with("finished_at", W::Now(0))
        .with("error", format!("corrupt record: {why}").as_str())
        .without("worker")
}

/// A stray id in the ready set (no task hash) no longer masks wake-ups: the scripts that add to
/// the ready set publish `r:` whenever the last claim found the set empty (drained flag `1`) or
/// no claim ran yet (no flag), whatever the set holds, and stay quiet only while the workers
/// are still claiming (their last claim got a full batch: flag `0`).
#[tokio::test]
async fn a_stray_ready_member_does_not_mask_wake_ups() {
    let fx = fx().await;
    let q = "stray";
    // Before: `ZCARD ready == 0` was false because of the stray, so no message.
    let seed = St::default().ready("ghost", 1).drained("1");
    let ran = run(&fx, q, &seed, async |s, p| {
        s.enqueue(p, &[new_task("a", Due::Delay(0), 5)])
            .await
            .unwrap()
    })
    .await;
    assert_msgs(
        &ran.msgs,
        &[M::R],
        ran.clock,
        "enqueue behind a stray, drained",
    );

    // The claim pops the stray (reported as corrupt) and the task, and finds the set empty.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.claim(p, 10, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.popped, ran.reply.corrupt), (2, 1));
    assert_eq!(ran.reply.tasks.len(), 1);
    let mut conn = fx.server.conn();
    let flag: String = conn.get(ran.p.keys.drained()).unwrap();
    assert_eq!(flag, "1", "a short claim marks the partition drained");

    // Every script that adds to the ready set wakes the workers once, then stays quiet.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.enqueue(
            p,
            &[
                new_task("b", Due::Delay(0), 5),
                new_task("c", Due::Delay(0), 5),
            ],
        )
        .await
        .unwrap()
    })
    .await;
    assert_msgs(&ran.msgs, &[M::R], ran.clock, "enqueue after a short claim");
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.enqueue(p, &[new_task("d", Due::Delay(0), 5)])
            .await
            .unwrap()
    })
    .await;
    assert_msgs(&ran.msgs, &[], ran.clock, "second enqueue: already woken");

    // A full batch leaves the flag at 0: the workers keep claiming without a message.
    let ran = run(&fx, q, &St::default(), async |s, p| {
        s.claim(p, 1, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!(ran.reply.popped, 1);
    let flag: String = conn.get(ran.p.keys.drained()).unwrap();
    assert_eq!(flag, "0", "a full claim leaves the flag");
}

/// Records that cannot be read (a field deleted or overwritten by hand) are handled one by one:
/// each goes to the dead set with a reason naming the field (or is repaired), the reply counts
/// it, no script fails, and the other tasks of the call move as usual. Found by fault injection:
/// reap failed on every call once one `attempts` was `abc`; retry took a task without
/// `max_retries` out of the active set and then failed (`running` in no set); promote dropped a
/// task with no `state` without a word.
#[tokio::test]
async fn unreadable_records_are_handled_one_by_one() {
    let fx = fx().await;
    let mut conn = fx.server.conn();

    // promote: no hash, no state, an unknown state, and a good task.
    let seed = St::default()
        .task("nostate", at("scheduled", 5, 1000).without("state"))
        .task("junk", at("scheduled", 5, 1000).with("state", "bogus"))
        .task("ok", at("scheduled", 5, 1000))
        .sched("gone", 1000)
        .sched("nostate", 1000)
        .sched("junk", 1000)
        .sched("ok", 1000);
    let ran = run(&fx, "bad_pro", &seed, async |s, p| {
        s.promote(p, 100).await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.moved, ran.reply.corrupt), (1, 3));
    let want = St::default()
        .task("nostate", corrupt(at("scheduled", 5, 1000), "state absent"))
        .task("junk", corrupt(at("scheduled", 5, 1000), "state \"bogus\""))
        .task("ok", at("ready", 5, 1000))
        .ready("ok", ready_score(5, 1000))
        .dead("junk", W::Now(0))
        .dead("nostate", W::Now(0))
        .stat("promoted", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "promote");

    // claim: an unreadable max_retries, a `nan` token, a missing timeout, no hash, a good task.
    let seed = St::default()
        .task("badmax", ready_task(5, 1000).with("max_retries", "abc"))
        .task("nantok", ready_task(5, 1000).with("token", "nan"))
        .task("notime", ready_task(5, 1000).without("timeout_ms"))
        .task("ok", ready_task(5, 1000))
        .ready("badmax", 1)
        .ready("gone", 2)
        .ready("nantok", 3)
        .ready("notime", 4)
        .ready("ok", 5);
    let ran = run(&fx, "bad_clm", &seed, async |s, p| {
        s.claim(p, 10, 30_000, "w1").await.unwrap()
    })
    .await;
    assert_eq!((ran.reply.popped, ran.reply.corrupt), (5, 4));
    let ids: Vec<&str> = ran.reply.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["ok"]);
    let want = St::default()
        .task(
            "badmax",
            corrupt(ready_task(5, 1000), "max_retries \"abc\"").with("max_retries", "abc"),
        )
        .task(
            "nantok",
            corrupt(ready_task(5, 1000), "token \"nan\"").with("token", "nan"),
        )
        .task(
            "notime",
            corrupt(ready_task(5, 1000), "timeout_ms absent").without("timeout_ms"),
        )
        .task("ok", claimed(ready_task(5, 1000), 1, 1))
        .active("ok", W::Now(30_000))
        .dead("badmax", W::Now(0))
        .dead("nantok", W::Now(0))
        .dead("notime", W::Now(0))
        .drained("1");
    assert_state(&mut conn, &ran.p, &want, ran.clock, "claim");

    // reap: `attempts` = `abc` (failed every call before), no hash, and a good expired lease.
    let seed = St::default()
        .task("abc", running(1, 1).with("attempts", "abc"))
        .task("ok", running(1, 1))
        .active("abc", 1000)
        .active("gone", 1000)
        .active("ok", 1000);
    let ran = run(&fx, "bad_rea", &seed, async |s, p| {
        s.reap(p, 100, MAX_LOST).await.unwrap()
    })
    .await;
    let r = ran.reply;
    assert_eq!((r.requeued, r.buried, r.corrupt), (1, 0, 2));
    let want = St::default()
        .task(
            "abc",
            corrupt(running(1, 1), "attempts \"abc\"").with("attempts", "abc"),
        )
        .task(
            "ok",
            running(1, 1)
                .failed("lease expired: worker lost during attempt 1")
                .with("state", "ready")
                .with("lost", 1)
                .with("error", "lease expired: worker lost during attempt 1")
                .without("worker"),
        )
        .ready("ok", W::Now(ready_score(5, 0)))
        .dead("abc", W::Now(0))
        .stat("reaped", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "reap");

    // retry: no max_retries and no timeout_ms (left `running` in no set before), next to a good one.
    let bare = || running(3, 1).without("max_retries").without("timeout_ms");
    let seed = St::default()
        .task("bare", bare())
        .task("ok", running(3, 1))
        .active("bare", FAR)
        .active("ok", FAR);
    let ran = run(&fx, "bad_rty", &seed, async |s, p| {
        s.retry(
            p,
            &[("bare", 3, "boom", Some(0)), ("ok", 3, "boom", Some(0))],
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(ran.reply, [Outcome::Corrupt, Outcome::Done]);
    let want = St::default()
        .task(
            "bare",
            corrupt(bare(), "max_retries absent; the run failed: boom"),
        )
        .task("ok", rescheduled(running(3, 1).failed("boom"), "boom", 0))
        .sched("ok", W::Now(0))
        .dead("bare", W::Now(0))
        .stat("retried", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "retry");

    // release: an unreadable `attempts` is repaired to 0 (HINCRBY failed on it before).
    let seed = St::default()
        .task("a", running(3, 1).with("attempts", "1e-3"))
        .active("a", FAR);
    let ran = run(&fx, "bad_rel", &seed, async |s, p| {
        s.release(p, &[("a", 3)]).await.unwrap()
    })
    .await;
    assert_eq!(ran.reply, [Outcome::Done]);
    let want = St::default()
        .task("a", running(3, 0).with("state", "ready").without("worker"))
        .ready("a", W::Now(ready_score(5, 0)));
    assert_state(&mut conn, &ran.p, &want, ran.clock, "release");

    // requeue: a member of the dead set whose `state` was deleted is dead by its set: requeued
    // (before, it was dropped from the dead set and left in no set).
    let seed = St::default()
        .task("a", dead_at().without("state"))
        .dead("a", 990);
    let ran = run(&fx, "bad_rqu", &seed, async |s, p| {
        s.requeue(p, &["a"]).await.unwrap()
    })
    .await;
    assert_eq!(
        ran.reply,
        [scheduler::broker::scripts::RequeueReply::Requeued]
    );
    let want = St::default()
        .task("a", requeued())
        .ready("a", W::Now(ready_score(5, 0)))
        .stat("requeued", 1);
    assert_state(&mut conn, &ran.p, &want, ran.clock, "requeue");
}
