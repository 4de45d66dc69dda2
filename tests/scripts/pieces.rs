//! Binary values stored in 64-byte pieces, payloads at the cap, and bad tasks refused alone.

use crate::support::*;

/// Args and results longer than 64 bytes are stored in pieces (`args`, `args:1`, ...) so the task
/// hash stays a compact listpack; claim, status and result see them whole, at every length
/// around the piece boundaries.
#[tokio::test]
async fn long_args_and_results_are_stored_in_pieces() {
    let fx = fx().await;
    let p = fx.store.partition("blob", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    for len in [0usize, 1, 63, 64, 65, 128, 129, 1000] {
        let id = format!("t{len}");
        let args: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut t = new_task(&id, Due::Delay(0), 5);
        t.args = args.clone();
        s.enqueue(&p, &[t]).await.unwrap();

        let key = p.keys.task(&id);
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
        let pieces = fields.keys().filter(|f| f.starts_with("args")).count();
        assert_eq!(pieces, len.div_ceil(64), "len {len}: pieces {fields:?}");
        assert!(
            fields.values().all(|v| v.len() <= 64),
            "len {len}: a value over 64 bytes"
        );
        let enc: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query(&mut conn)
            .unwrap();
        assert_eq!(enc, "listpack", "len {len}");

        let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
        assert_eq!(claim.tasks.len(), 1, "len {len}");
        assert_eq!(claim.tasks[0].args, args, "len {len}: claimed args");

        let result: Vec<u8> = args.iter().rev().copied().collect();
        let acked = s
            .ack_many(&[(&p, vec![(id.as_str(), 1, &result[..])])], 60_000)
            .await
            .unwrap();
        assert_eq!(acked, vec![vec![Outcome::Done]], "len {len}");
        let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
        assert_eq!(take_blob(&mut fields, "args").unwrap_or_default(), args);
        assert_eq!(take_blob(&mut fields, "result").unwrap_or_default(), result);
        assert!(
            !fields
                .keys()
                .any(|f| f.starts_with("args") || f.starts_with("result")),
            "len {len}: pieces left over: {fields:?}"
        );
    }
}

/// The producer's and worker's default payload cap (`max_payload_bytes`): 1 MiB.
const CAP: usize = 1 << 20;

/// Every size the API accepts works in every script that stores or reads a blob: a bulk enqueue
/// with arguments of exactly the cap between two small tasks creates all three (each in its set),
/// claim hands the arguments back whole, and ack stores a result of exactly the cap whole. (Lua's
/// `unpack` fails near 8,000 values: an unchunked `HSET` of 64-byte pieces failed beyond ~255 kB
/// and left the tasks written before it in no set.)
#[tokio::test]
async fn payloads_at_the_cap_pass_every_script() {
    let fx = fx().await;
    let p = fx.store.partition("cap", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let big: Vec<u8> = (0..CAP).map(|i| (i * 7 % 251) as u8).collect();
    let mut b = new_task("b", Due::Delay(0), 5);
    b.args = big.clone();
    let tasks = [
        new_task("a", Due::Delay(0), 9),
        b,
        new_task("c", Due::Delay(0), 1),
    ];
    let reply = s.enqueue(&p, &tasks).await.unwrap();
    assert_eq!(reply, vec![Outcome::Done; 3]);
    let ready: Vec<String> = conn.zrange(p.keys.ready(), 0, -1).unwrap();
    assert_eq!(ready, ["a", "b", "c"]);

    let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
    let ids: Vec<&str> = claim.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(claim.tasks[1].args, big, "claimed args whole");

    let result: Vec<u8> = big.iter().rev().copied().collect();
    let acked = s
        .ack_many(
            &[(
                &p,
                vec![("a", 1, &result[..]), ("b", 1, &result[..]), ("c", 1, &[])],
            )],
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(acked, vec![vec![Outcome::Done; 3]]);
    for id in ["a", "b"] {
        let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task(id)).unwrap();
        assert_eq!(
            fields.get("state").map(Vec::as_slice),
            Some(&b"succeeded"[..])
        );
        assert!(
            take_blob(&mut fields, "result") == Some(result.clone()),
            "{id}: result whole"
        );
    }
    let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("b")).unwrap();
    assert!(take_blob(&mut fields, "args") == Some(big), "b: args whole");
}

/// `enqueue.lua` as the store loads it, to call it with values the typed wrapper cannot produce.
fn raw_enqueue() -> redis::Script {
    redis::Script::new(&scheduler::broker::scripts::with_prelude(include_str!(
        "../../lua/enqueue.lua"
    )))
}

/// enqueue checks every value of a task before its first write: a task with an empty id, a
/// delay, run-at, retry count, timeout or priority that is not a decimal integer in range is
/// refused alone (-2, nothing written), and the tasks around it are created as usual.
#[tokio::test]
async fn enqueue_refuses_a_bad_task_alone() {
    let fx = fx().await;
    let p = fx.store.partition("enqbad", SHARD);
    let mut conn = fx.server.conn();
    let c0 = server_ms(&mut conn);
    let good = |id: &str| {
        vec![
            id.to_owned(),
            "job".into(),
            "\u{91}*".into(),
            "0".into(),
            "0".into(),
            "3".into(),
            "30000".into(),
            "5".into(),
        ]
    };
    let bad = |id: &str, at: usize, v: &str| {
        let mut t = good(id);
        t[at] = v.to_owned();
        t
    };
    let tasks = [
        good("a"),
        bad("b", 3, "abc"),
        bad("c", 3, "-5"),
        bad("d", 4, "nan"),
        bad("e", 5, "-1"),
        bad("f", 6, "1e-3"),
        bad("g", 7, "12"),
        bad("h", 7, "2.5"),
        bad("", 0, ""),
        good("z"),
    ];
    let script = raw_enqueue();
    let mut inv = script.prepare_invoke();
    inv.key(p.keys.scheduled())
        .key(p.keys.ready())
        .key(p.keys.stats())
        .key(p.keys.drained())
        .arg(p.keys.task_prefix())
        .arg(&p.channel)
        .arg(SHARD)
        .arg(8);
    for v in tasks.iter().flatten() {
        inv.arg(v);
    }
    let reply: Vec<i64> = inv.invoke(&mut conn).unwrap();
    assert_eq!(reply, [1, -2, -2, -2, -2, -2, -2, -2, -2, 1]);
    let c = Clock {
        t0: c0,
        t1: server_ms(&mut conn),
    };
    let rec = || {
        Rec::new("ready")
            .with("run_at", W::Now(0))
            .with("enqueued_at", W::Now(0))
            .with("args", "\u{91}*")
    };
    let want = St::default()
        .task("a", rec())
        .task("z", rec())
        .ready("a", W::Now(ready_score(5, 0)))
        .ready("z", W::Now(ready_score(5, 0)))
        .stat("enqueued", 2);
    assert_state(&mut conn, &p, &want, c, "bad tasks refused alone");
}
