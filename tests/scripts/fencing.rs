//! Fencing, end to end: a worker that lost its lease cannot ack or change the task.

use crate::support::*;

/// Fencing across scripts: a worker whose lease expired and was reaped cannot acknowledge once
/// the task is claimed again; its token (1) is rejected everywhere, the new holder's (2) works.
#[tokio::test]
async fn fencing_rejects_the_lost_workers_token() {
    let fx = fx().await;
    let p = fx.store.partition("fence", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    s.enqueue(&p, &[new_task("a", Due::Delay(0), 5)])
        .await
        .unwrap();

    let first = s.claim(&p, 10, 30, "w1").await.unwrap();
    assert_eq!(first.tasks.len(), 1);
    assert_eq!((first.tasks[0].token, first.tasks[0].attempt), (1, 1));

    tokio::time::sleep(Duration::from_millis(60)).await;
    let before_reap = server_ms(&mut conn);
    let r = s.reap(&p, 100, MAX_LOST).await.unwrap();
    let after_reap = server_ms(&mut conn);
    assert_eq!((r.requeued, r.buried, r.next_deadline_ms), (1, 0, None));

    // Between reap and the next claim the task is `ready`: token 1 is already refused.
    assert_eq!(
        s.extend(&p, 30_000, &[("a", 1)]).await.unwrap(),
        vec![Outcome::StaleLease]
    );

    let second = s.claim(&p, 10, 30_000, "w2").await.unwrap();
    assert_eq!(second.tasks.len(), 1);
    assert_eq!((second.tasks[0].token, second.tasks[0].attempt), (2, 2));

    let stale = [("a", 1, &b"late"[..])];
    assert_eq!(
        s.ack_many(&[(&p, stale.to_vec())], 60_000).await.unwrap(),
        vec![vec![Outcome::StaleLease]]
    );
    assert_eq!(
        s.retry(&p, &[("a", 1, "late", Some(0))]).await.unwrap(),
        vec![Outcome::StaleLease]
    );
    assert_eq!(
        s.release(&p, &[("a", 1)]).await.unwrap(),
        vec![Outcome::StaleLease]
    );
    let state: (String, String, String) = redis::cmd("HMGET")
        .arg(p.keys.task("a"))
        .arg("state")
        .arg("token")
        .arg("worker")
        .query(&mut conn)
        .unwrap();
    assert_eq!(state, ("running".into(), "2".into(), "w2".into()));

    let t0 = server_ms(&mut conn);
    let fresh = [("a", 2, &b"ok"[..])];
    assert_eq!(
        s.ack_many(&[(&p, fresh.to_vec())], 60_000).await.unwrap(),
        vec![vec![Outcome::Done]]
    );
    let c = Clock {
        t0,
        t1: server_ms(&mut conn),
    };
    let want = St::default()
        .task_ttl(
            "a",
            enqueued("succeeded", 5, W::I(first.tasks[0].due_ms))
                .with("enqueued_at", first.tasks[0].due_ms)
                .with("token", 2)
                .with("attempts", 2)
                .with("lost", 1)
                .with("started_at", second.server_now_ms)
                .with("worker", "w2")
                .with("error", "lease expired: worker lost during attempt 1")
                .with(
                    "attempt_log",
                    W::Log(vec![LogEntry {
                        attempt: 1,
                        started_at: Some(first.server_now_ms),
                        failed_at: Some((before_reap, after_reap)),
                        worker: "w1".into(),
                        error: "lease expired: worker lost during attempt 1".into(),
                    }]),
                )
                .with("result", "ok")
                .with("finished_at", W::Now(0)),
            60_000,
        )
        .stat("enqueued", 1)
        .stat("reaped", 1)
        .stat("succeeded", 1);
    assert_state(&mut conn, &p, &want, c, "after the ack with token 2");
}
