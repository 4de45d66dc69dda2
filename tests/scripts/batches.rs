//! Batch sizes beyond the Lua unpack limit, and trim_dead.

use crate::support::*;

/// Seeds `n` tasks `t00000`.. in state `state` into sorted set `zset` with score 1000, pipelined.
fn seed_many(
    conn: &mut Connection,
    p: &Partition,
    n: usize,
    state: &str,
    zset: &str,
) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HSET")
            .arg(p.keys.task(id))
            .arg("state")
            .arg(state)
            .arg("priority")
            .arg(5)
            .arg("run_at")
            .arg(1000)
            .arg("attempts")
            .arg(1)
            .arg("max_retries")
            .arg(3)
            .arg("token")
            .arg(1)
            .ignore();
        pipe.cmd("ZADD").arg(zset).arg(1000).arg(id).ignore();
    }
    pipe.query::<()>(conn).unwrap();
    ids
}

/// Batches of 10,000 never fail and never leave a task in two sets: promote and reap take at most
/// `MAX_BATCH` per call, ack takes them all. (Lua's `unpack` is limited to about 8,000 values;
/// the scripts remove members in chunks.)
#[tokio::test]
async fn batches_beyond_the_lua_unpack_limit() {
    const N: usize = 10_000;
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let mut outcomes = Vec::new();
    // What a failed call left behind: Redis does not roll back a script's writes before an error.
    let card = |conn: &mut Connection, key: String| -> usize {
        redis::cmd("ZCARD").arg(key).query(conn).unwrap()
    };

    let p = fx.store.partition("big-promote", SHARD);
    seed_many(&mut conn, &p, N, "scheduled", &p.keys.scheduled());
    let r = fx.store.promote(&p, N as u32).await;
    outcomes.push((
        "promote.lua",
        r.map(|r| r.moved).map_err(|e| e.to_string()),
        format!(
            "scheduled {} ready {}",
            card(&mut conn, p.keys.scheduled()),
            card(&mut conn, p.keys.ready())
        ),
    ));

    let p = fx.store.partition("big-reap", SHARD);
    seed_many(&mut conn, &p, N, "running", &p.keys.active());
    let r = fx.store.reap(&p, N as u32, MAX_LOST).await;
    outcomes.push((
        "reap.lua",
        r.map(|r| r.requeued).map_err(|e| e.to_string()),
        format!(
            "active {} ready {}",
            card(&mut conn, p.keys.active()),
            card(&mut conn, p.keys.ready())
        ),
    ));

    let p = fx.store.partition("big-ack", SHARD);
    let ids = seed_many(&mut conn, &p, N, "running", &p.keys.active());
    let items: Vec<AckItem<'_>> = ids.iter().map(|id| (id.as_str(), 1, &b""[..])).collect();
    let r = fx.store.ack_many(&[(&p, items)], 0).await;
    let keys = partition_keys(&mut conn, &p).len();
    outcomes.push((
        "ack.lua",
        r.map(|v| v[0].iter().filter(|o| **o == Outcome::Done).count() as u64)
            .map_err(|e| e.to_string()),
        format!("active {} keys {keys}", card(&mut conn, p.keys.active())),
    ));

    // Promote and reap take at most MAX_BATCH per call (the caller loops); ack takes what it is
    // given. Either way no call fails and no task is left in two sets.
    let cap = MAX_BATCH as u64;
    let rest = N as u64 - cap;
    let want = [
        (
            "promote.lua",
            Ok(cap),
            format!("scheduled {rest} ready {cap}"),
        ),
        ("reap.lua", Ok(cap), format!("active {rest} ready {cap}")),
        ("ack.lua", Ok(N as u64), "active 0 keys 1".to_owned()),
    ];
    assert_eq!(outcomes, want, "batches of {N}");
}

/// trim_dead deletes dead tasks past the age limit, then the oldest beyond the length limit, at
/// most a batch per call, hash and dead-set entry together; newer dead tasks are untouched.
#[tokio::test]
async fn trim_dead_enforces_age_and_length() {
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let p = fx.store.partition("trim", SHARD);
    let now = server_ms(&mut conn);
    // Ten dead tasks: d0..d3 died an hour ago, d4..d9 died 1..6 ms ago (d4 oldest).
    let mut pipe = redis::pipe();
    for i in 0..10i64 {
        let id = format!("d{i}");
        let died = if i < 4 {
            now - 3_600_000 - i
        } else {
            now - (10 - i)
        };
        pipe.hset(p.keys.task(&id), "state", "dead").ignore();
        pipe.zadd(p.keys.dead(), &id, died).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let dead = |conn: &mut Connection| -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(p.keys.dead())
            .arg(0)
            .arg(-1)
            .query(conn)
            .unwrap()
    };
    let exists = |conn: &mut Connection, id: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(p.keys.task(id))
            .query(conn)
            .unwrap()
    };

    // Batch 3: only three of the four too-old tasks go, oldest first.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 100, 3).await.unwrap(), 3);
    assert_eq!(dead(&mut conn).len(), 7);
    assert!(!exists(&mut conn, "d3") && !exists(&mut conn, "d2") && !exists(&mut conn, "d1"));
    assert!(exists(&mut conn, "d0"));

    // The last old one, then the oldest beyond a length of 4: d0, then d4 and d5.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 4, 100).await.unwrap(), 3);
    assert_eq!(dead(&mut conn), vec!["d6", "d7", "d8", "d9"]);
    for id in ["d0", "d4", "d5"] {
        assert!(!exists(&mut conn, id), "{id}");
    }
    for id in ["d6", "d7", "d8", "d9"] {
        assert!(exists(&mut conn, id), "{id}");
    }

    // Within both limits: nothing to do.
    assert_eq!(fx.store.trim_dead(&p, 60_000, 4, 100).await.unwrap(), 0);
}
