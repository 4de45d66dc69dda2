//! Headers: stored only for tasks that have them (in 64-byte pieces), handed back by every
//! lease (claim, promote), kept by retries; a task without headers stores and returns nothing
//! more.

use crate::support::*;
use scheduler::headers::{self, Headers};

/// A call with one task with headers and one without: only the first record has `headers`
/// fields (two pieces, the hash still a listpack); claim hands each its own headers (none for
/// the second); after a retry, promote-and-lease hands the same headers back.
#[tokio::test]
async fn headers_are_stored_only_when_given_and_survive_a_retry() {
    let fx = fx().await;
    let p = fx.store.partition("hdr", SHARD);
    let s = &fx.store;
    let mut conn = fx.server.conn();
    let mut h = Headers::new();
    h.insert("tenant".into(), "42".into());
    h.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    let enc = headers::encode(&h).unwrap();
    assert!(enc.len() > 64 && enc.len() <= 128, "{} bytes", enc.len());
    let mut with = new_task("with", Due::Delay(0), 5);
    with.headers = enc.clone();
    let without = new_task("without", Due::Delay(0), 5);
    let reply = s.enqueue(&p, &[with, without]).await.unwrap();
    assert_eq!(reply, vec![Outcome::Done, Outcome::Done]);

    let fields: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("with")).unwrap();
    let mut pieces: Vec<&String> = fields.keys().filter(|f| f.starts_with("headers")).collect();
    pieces.sort();
    assert_eq!(pieces, ["headers", "headers:1"]);
    let mut f = fields.clone();
    assert_eq!(take_blob(&mut f, "headers").unwrap(), enc);
    let kind: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(p.keys.task("with"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "listpack");
    let bare: HashMap<String, Vec<u8>> = conn.hgetall(p.keys.task("without")).unwrap();
    assert!(!bare.keys().any(|f| f.starts_with("headers")), "{bare:?}");

    let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
    let by_id: HashMap<&str, &Claimed> = claim.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    assert_eq!(by_id["with"].headers, enc);
    assert_eq!(by_id["with"].args, ARGS);
    assert!(by_id["without"].headers.is_empty());
    assert_eq!(by_id["without"].args, ARGS);

    let token = by_id["with"].token;
    let out = s
        .retry(&p, &[("with", token, "try again", Some(0))])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Done]);
    let (_, leased) = s.promote_claim(&p, 10, 10, 30_000, "w1").await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].attempt, 2);
    assert_eq!(headers::decode(&leased[0].headers).unwrap(), h);
}

/// Headers whose pieces span more than one read of get_blob (over 128 bytes) come back whole.
#[tokio::test]
async fn long_headers_come_back_whole() {
    let fx = fx().await;
    let p = fx.store.partition("hdr-long", SHARD);
    let s = &fx.store;
    let h: Headers = (0..40)
        .map(|i| (format!("key-{i}"), format!("value number {i}")))
        .collect();
    let mut t = new_task("long", Due::Delay(0), 0);
    t.headers = headers::encode(&h).unwrap();
    assert!(t.headers.len() > 600);
    s.enqueue(&p, &[t]).await.unwrap();
    let claim = s.claim(&p, 10, 30_000, "w1").await.unwrap();
    assert_eq!(headers::decode(&claim.tasks[0].headers).unwrap(), h);
}
