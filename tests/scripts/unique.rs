//! enqueue_unique: the window key, throttle and debounce, replaced arguments at every length
//! around the piece boundaries (no stale piece left), and bad values refused.

use scheduler::broker::store::{UniqueMode, UniqueReply};

use crate::support::*;

/// Debounce replaces a pending task's arguments and headers, from every length to every length around the
/// 64-byte pieces (and past 256 pieces, one `HDEL` batch): the record holds exactly the new
/// pieces, and a claim sees the new arguments.
#[tokio::test]
async fn debounce_replaces_args_at_every_length() {
    let fx = fx().await;
    let p = fx.store.partition("uq", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let lens = [0usize, 1, 64, 65, 200, 40_000];
    for old in lens {
        for new in lens {
            let dig = format!("d{old}-{new}");
            let id = format!("t{old}-{new}");
            let mut t = new_task(&id, Due::Delay(60_000), 0);
            t.args = vec![1; old];
            // Headers (opaque to the script) replaced by none: their pieces go too.
            t.headers = vec![7; old];
            let r = s
                .enqueue_unique(&p, &dig, UniqueMode::Debounce, 10_000, &t, None)
                .await
                .unwrap();
            assert_eq!(r, UniqueReply::Created(id.clone()));
            let mut t2 = new_task("other-id", Due::Delay(0), 0);
            t2.args = (0..new).map(|i| (i % 251) as u8).collect();
            let r = s
                .enqueue_unique(&p, &dig, UniqueMode::Debounce, 10_000, &t2, None)
                .await
                .unwrap();
            assert_eq!(r, UniqueReply::Replaced(id.clone()), "{old} -> {new}");
            let key = p.keys.task(&id);
            let fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
            let pieces = fields.keys().filter(|f| f.starts_with("args")).count();
            assert_eq!(pieces, new.div_ceil(64), "{old} -> {new}");
            assert!(
                !fields.keys().any(|f| f.starts_with("headers")),
                "{old} -> {new}: stale headers"
            );
            assert_eq!(fields["state"], b"ready", "{old} -> {new}");
            let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
            assert_eq!(claim.tasks.len(), 1, "{old} -> {new}");
            assert_eq!(claim.tasks[0].id, id);
            assert_eq!(claim.tasks[0].args, t2.args, "{old} -> {new}");
            let sched: i64 = conn.zcard(p.keys.scheduled()).unwrap();
            assert_eq!(sched, 0, "{old} -> {new}");
            // Running now: the next debounce creates a task with its own id.
            let r = s
                .enqueue_unique(&p, &dig, UniqueMode::Debounce, 10_000, &t2, None)
                .await
                .unwrap();
            assert_eq!(r, UniqueReply::Created("other-id".into()));
            let _: () = conn.del(p.keys.task("other-id")).unwrap();
            let _: () = conn.del(p.keys.ready()).unwrap();
        }
    }
}

/// Throttle: an open window replies its holder and writes nothing, whatever the holder's state
/// (here: no record at all); the key holds the id with the window as TTL.
#[tokio::test]
async fn throttle_keeps_the_window_holder() {
    let fx = fx().await;
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let seed = St::default();
    let ran = run(&fx, "uq", &seed, async |s: &Store, p: &Partition| {
        s.enqueue_unique(
            p,
            "abc",
            UniqueMode::Throttle,
            5_000,
            &new_task("a", Due::Delay(60_000), 2),
            None,
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(ran.reply, UniqueReply::Created("a".into()));
    assert_eq!(ran.msgs.len(), 1, "{:?}", ran.msgs);
    assert!(
        ran.msgs[0].starts_with(&format!("s:{SHARD}:")),
        "{:?}",
        ran.msgs
    );
    let p = ran.p;
    let ukey = p.keys.unique("abc");
    let held: String = conn.get(&ukey).unwrap();
    assert_eq!(held, "a");
    let ttl: i64 = conn.pttl(&ukey).unwrap();
    assert!(ttl > 0 && ttl <= 5_000, "{ttl}");
    let _: () = conn.del(p.keys.task("a")).unwrap();
    let r = s
        .enqueue_unique(
            &p,
            "abc",
            UniqueMode::Throttle,
            5_000,
            &new_task("b", Due::Delay(0), 0),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r, UniqueReply::Existing("a".into()));
    let exists: bool = conn.exists(p.keys.task("b")).unwrap();
    assert!(!exists);
    let ready: i64 = conn.zcard(p.keys.ready()).unwrap();
    assert_eq!(ready, 0);
}

/// Values out of range reply Invalid and write nothing: a zero window, a priority of 10, an
/// empty id.
#[tokio::test]
async fn bad_values_write_nothing() {
    let fx = fx().await;
    let p = fx.store.partition("uq", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let ok = new_task("a", Due::Delay(0), 0);
    let mut prio = ok.clone();
    prio.priority = 10;
    let mut empty = ok.clone();
    empty.id = String::new();
    for (window, t) in [(0, &ok), (1000, &prio), (1000, &empty)] {
        for mode in [UniqueMode::Throttle, UniqueMode::Debounce] {
            let r = s
                .enqueue_unique(&p, "k", mode, window, t, None)
                .await
                .unwrap();
            assert_eq!(r, UniqueReply::Invalid, "{window} {t:?}");
        }
    }
    assert!(partition_keys(&mut conn, &p).is_empty());
    let u: bool = conn.exists(p.keys.unique("k")).unwrap();
    assert!(!u);
}
