//! progress: a running task's progress report written under its lease token.

use crate::support::*;

struct ProgressCase {
    name: &'static str,
    seed: fn(&str) -> St,
    token: i64,
    percent: u8,
    message: &'static str,
    reply: Outcome,
    want: fn(&str) -> St,
}

table_case!(ProgressCase);

/// 130 bytes: three pieces (64 + 64 + 2).
const LONG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\
                    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!?";

/// progress writes percent, time, attempt and message only for a running task under the
/// matching token, replacing every piece of an older message; anything else replies -1 and
/// changes nothing (no record is created, no set touched, nothing published).
#[tokio::test]
async fn progress_transitions() {
    let cases = [
        ProgressCase {
            name: "matching token: percent, time, attempt and message written",
            seed: |_| St::default().task("a", running(2, 3)).active("a", 9000),
            token: 2,
            percent: 40,
            message: "loading rows",
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 3)
                            .with("progress", 40)
                            .with("progress_at", W::Now(0))
                            .with("progress_attempt", 3)
                            .with("progress_msg", "loading rows"),
                    )
                    .active("a", 9000)
            },
        },
        ProgressCase {
            name: "a long message in pieces replaced by a short one: old pieces deleted",
            seed: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("progress", 10)
                            .with("progress_at", 900)
                            .with("progress_attempt", 1)
                            .with("progress_msg", &LONG[..64])
                            .with("progress_msg:1", &LONG[64..128])
                            .with("progress_msg:2", &LONG[128..]),
                    )
                    .active("a", 9000)
            },
            token: 2,
            percent: 100,
            message: "done",
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("progress", 100)
                            .with("progress_at", W::Now(0))
                            .with("progress_attempt", 1)
                            .with("progress_msg", "done"),
                    )
                    .active("a", 9000)
            },
        },
        ProgressCase {
            name: "a message over 64 bytes: written in pieces",
            seed: |_| St::default().task("a", running(5, 2)).active("a", 9000),
            token: 5,
            percent: 0,
            message: LONG,
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(5, 2)
                            .with("progress", 0)
                            .with("progress_at", W::Now(0))
                            .with("progress_attempt", 2)
                            .with("progress_msg", &LONG[..64])
                            .with("progress_msg:1", &LONG[64..128])
                            .with("progress_msg:2", &LONG[128..]),
                    )
                    .active("a", 9000)
            },
        },
        ProgressCase {
            name: "empty message: the old one removed, no field written",
            seed: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("progress", 10)
                            .with("progress_at", 900)
                            .with("progress_attempt", 1)
                            .with("progress_msg", "old"),
                    )
                    .active("a", 9000)
            },
            token: 2,
            percent: 20,
            message: "",
            reply: Outcome::Done,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(2, 1)
                            .with("progress", 20)
                            .with("progress_at", W::Now(0))
                            .with("progress_attempt", 1),
                    )
                    .active("a", 9000)
            },
        },
        ProgressCase {
            name: "stale token (the lease passed to another run): -1, nothing changed",
            seed: |_| {
                St::default()
                    .task(
                        "a",
                        running(3, 2)
                            .with("progress", 70)
                            .with("progress_at", 900)
                            .with("progress_attempt", 1)
                            .with("progress_msg", "first run"),
                    )
                    .active("a", 9000)
            },
            token: 2,
            percent: 90,
            message: "late",
            reply: Outcome::StaleLease,
            want: |_| {
                St::default()
                    .task(
                        "a",
                        running(3, 2)
                            .with("progress", 70)
                            .with("progress_at", 900)
                            .with("progress_attempt", 1)
                            .with("progress_msg", "first run"),
                    )
                    .active("a", 9000)
            },
        },
        ProgressCase {
            name: "not running (handed back, same token): -1, nothing changed",
            seed: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
            token: 2,
            percent: 50,
            message: "x",
            reply: Outcome::StaleLease,
            want: |_| {
                St::default()
                    .task("a", ready_task(5, 1000).with("token", 2))
                    .ready("a", ready_score(5, 1000))
            },
        },
        ProgressCase {
            name: "no record: -1, no key created",
            seed: |_| St::default(),
            token: 1,
            percent: 50,
            message: "x",
            reply: Outcome::StaleLease,
            want: |_| St::default(),
        },
    ];
    run_table(
        "prog",
        &cases,
        async |case, s, p| {
            s.progress(p, "a", case.token, case.percent, case.message)
                .await
                .unwrap()
        },
        |case, ran| assert_eq!(ran.reply, case.reply, "{}: reply", case.name),
    )
    .await;
}

/// The longest message (1,024 bytes, 16 pieces) keeps the hash a listpack, and a shorter one
/// after it leaves no piece behind.
#[tokio::test]
async fn the_longest_message_keeps_the_hash_a_listpack() {
    let fx = fx().await;
    let p = fx.store.partition("prog-long", SHARD);
    let mut conn = fx.server.conn();
    St::default()
        .task("a", running(1, 1))
        .active("a", FAR)
        .seed(&mut conn, &p);
    let msg = "m".repeat(1024);
    let out = fx.store.progress(&p, "a", 1, 99, &msg).await.unwrap();
    assert_eq!(out, Outcome::Done);
    let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("a")).unwrap();
    let pieces = fields
        .keys()
        .filter(|f| f.starts_with("progress_msg"))
        .count();
    assert_eq!(pieces, 16);
    assert_eq!(
        take_blob(&mut fields, "progress_msg").unwrap(),
        msg.as_bytes()
    );
    let kind: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(p.keys.task("a"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "listpack");
    fx.store.progress(&p, "a", 1, 100, "ok").await.unwrap();
    let fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("a")).unwrap();
    let left: Vec<&String> = fields
        .keys()
        .filter(|f| f.starts_with("progress_msg"))
        .collect();
    assert_eq!(left, ["progress_msg"]);
    assert_eq!(fields["progress_msg"], b"ok");
}
