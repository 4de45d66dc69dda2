//! The promoter lock: acquire, renew and release with a token.

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum LockCall {
    Acquire(&'static str, u64),
    Renew(&'static str, u64),
    Release(&'static str),
}

struct LockCase {
    name: &'static str,
    /// Holder and TTL (ms) of the lock before the call.
    seed: Option<(&'static str, u64)>,
    call: LockCall,
    reply: bool,
    /// Holder after the call and the TTL (ms) it was last given.
    want: Option<(&'static str, i64)>,
}

/// The promoter lock is taken only when free (SET NX PX), and renewed or released only by the
/// token that holds it.
#[tokio::test]
async fn lock_transitions() {
    use LockCall::{Acquire, Release, Renew};
    let cases = [
        LockCase {
            name: "acquire a free lock",
            seed: None,
            call: Acquire("A", 5000),
            reply: true,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "acquire a lock held by another: refused",
            seed: Some(("A", 5000)),
            call: Acquire("B", 9000),
            reply: false,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "renew our lock: new TTL",
            seed: Some(("A", 5000)),
            call: Renew("A", 20_000),
            reply: true,
            want: Some(("A", 20_000)),
        },
        LockCase {
            name: "renew another's lock: refused, TTL unchanged",
            seed: Some(("A", 5000)),
            call: Renew("B", 20_000),
            reply: false,
            want: Some(("A", 5000)),
        },
        LockCase {
            name: "renew an expired lock: refused, not recreated",
            seed: None,
            call: Renew("A", 20_000),
            reply: false,
            want: None,
        },
        LockCase {
            name: "release our lock: deleted",
            seed: Some(("A", 5000)),
            call: Release("A"),
            reply: true,
            want: None,
        },
        LockCase {
            name: "release another's lock: refused, kept",
            seed: Some(("A", 5000)),
            call: Release("B"),
            reply: false,
            want: Some(("A", 5000)),
        },
    ];
    let fx = fx().await;
    let mut conn = fx.server.conn();
    for (i, case) in cases.iter().enumerate() {
        let p = fx.store.partition(&format!("lck{i}"), SHARD);
        if let Some((holder, ttl)) = case.seed {
            let _: () = redis::cmd("SET")
                .arg(p.keys.lock())
                .arg(holder)
                .arg("PX")
                .arg(ttl)
                .query(&mut conn)
                .unwrap();
        }
        let got = match case.call {
            Acquire(tok, ttl) => fx.store.lock_acquire(&p, tok, ttl).await,
            Renew(tok, ttl) => fx.store.lock_renew(&p, tok, ttl).await,
            Release(tok) => fx.store.lock_release(&p, tok).await,
        }
        .unwrap();
        assert_eq!(got, case.reply, "{}: reply", case.name);
        let holder: Option<String> = redis::cmd("GET")
            .arg(p.keys.lock())
            .query(&mut conn)
            .unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(p.keys.lock())
            .query(&mut conn)
            .unwrap();
        match case.want {
            None => {
                assert_eq!(holder, None, "{}: holder", case.name);
                assert_eq!(pttl, -2, "{}: PTTL", case.name);
            }
            Some((want, ttl)) => {
                assert_eq!(holder.as_deref(), Some(want), "{}: holder", case.name);
                assert!(
                    pttl <= ttl && pttl > ttl - 2000,
                    "{}: PTTL {pttl}, want about {ttl}",
                    case.name
                );
            }
        }
        let want_keys: BTreeSet<String> = case.want.iter().map(|_| p.keys.lock()).collect();
        assert_eq!(
            partition_keys(&mut conn, &p),
            want_keys,
            "{}: keys",
            case.name
        );
    }
}
