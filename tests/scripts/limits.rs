//! limit_acquire: the starts of a batch of tasks from one budget, in one call, answered as one
//! call per task in the order given would answer them.

use std::time::Duration;

use redis::Commands;
use scheduler_core::headers::Headers;
use scheduler_core::limits::{budgets_for, Budget, Limit, LimitScope, LimitTable};
use scheduler_core::store::{holder, waiter, Acquired, Partition};

use crate::support::*;

/// The budget of a limit on task name `x`.
fn budget(limit: Limit) -> Budget {
    let mut table = LimitTable::new();
    table.insert(LimitScope::task("x").unwrap(), limit);
    budgets_for(&table, "q", "x", &Headers::new()).remove(0)
}

/// (holder, waiter) of tasks `t<i>` of `p`, lease token 1.
fn asks(p: &Partition, ids: std::ops::Range<usize>) -> Vec<(String, String)> {
    ids.map(|i| {
        let id = format!("t{i}");
        (holder(p, &id, 1), waiter(p, &id))
    })
    .collect()
}

/// A rate limit of 3 per second asked for 5 starts at once: the first 3 start now; the 4th waits
/// until the oldest start leaves the window, the 5th one spacing (1000 / 3 ms) later; a later
/// refusal is chained after them; a holder asking again (a retried call) keeps its start.
#[tokio::test]
async fn rate_batch_grants_up_to_the_limit_and_chains_the_rest() {
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let p = fx.store.partition("q", 0);
    let b = budget(Limit::rate(3, Duration::from_secs(1)).unwrap());
    let before = server_ms(&mut conn);
    let got = fx
        .store
        .limit_acquire(&b, 30_000, 30_000, &asks(&p, 0..5))
        .await
        .unwrap();
    let after = server_ms(&mut conn);
    let mut granted_at = Vec::new();
    for a in &got[..3] {
        match *a {
            Acquired::Granted(t) => granted_at.push(t),
            Acquired::Denied(_) => panic!("one of the first 3 refused: {got:?}"),
        }
    }
    assert!(granted_at.iter().all(|&t| (before..=after).contains(&t)));
    let (Acquired::Denied(fourth), Acquired::Denied(fifth)) = (got[3], got[4]) else {
        panic!("the 4th and 5th should wait: {got:?}");
    };
    assert_eq!(
        fourth,
        granted_at[0] + 1000,
        "when the oldest start leaves the window"
    );
    assert_eq!(fifth, fourth + 333, "one spacing after the 4th");
    let log: usize = conn.zcard(format!("t:{{lim:{}}}:log", b.digest)).unwrap();
    assert_eq!(log, 3, "only the granted starts are logged");

    let again = fx
        .store
        .limit_acquire(&b, 30_000, 30_000, &asks(&p, 0..1))
        .await
        .unwrap();
    assert!(matches!(again[..], [Acquired::Granted(_)]), "{again:?}");
    let later = fx
        .store
        .limit_acquire(&b, 30_000, 30_000, &asks(&p, 5..6))
        .await
        .unwrap();
    assert_eq!(
        later,
        vec![Acquired::Denied(fifth + 333)],
        "chained after the 5th"
    );
}

/// A concurrency limit of 2 asked for 4 starts at once: 2 hold a slot (and leave the waiters),
/// 2 are told to wait at most the longest wait; a holder asking again keeps its slot.
#[tokio::test]
async fn concurrency_batch_fills_the_free_slots() {
    let fx = fx().await;
    let mut conn = fx.server.conn();
    let p = fx.store.partition("q", 0);
    let b = budget(Limit::concurrency(2).unwrap());
    let run = format!("t:{{lim:{}}}:run", b.digest);
    let wait = format!("t:{{lim:{}}}:wait", b.digest);
    let all = asks(&p, 0..4);
    let _: () = conn.zadd(&wait, &all[0].1, 1000).unwrap();
    let before = server_ms(&mut conn);
    let got = fx
        .store
        .limit_acquire(&b, 30_000, 5_000, &all)
        .await
        .unwrap();
    let after = server_ms(&mut conn);
    assert!(matches!(got[0], Acquired::Granted(_)) && matches!(got[1], Acquired::Granted(_)));
    for a in &got[2..] {
        let Acquired::Denied(until) = *a else {
            panic!("the 3rd and 4th should wait: {got:?}");
        };
        assert!((before + 5_000..=after + 5_000).contains(&until));
    }
    let holders: Vec<(String, i64)> = conn.zrange_withscores(&run, 0, -1).unwrap();
    assert_eq!(holders.len(), 2);
    for (h, deadline) in &holders {
        assert!(*h == all[0].0 || *h == all[1].0, "{h:?}");
        assert!((before + 30_000..=after + 30_000).contains(deadline));
    }
    let waiting: Option<f64> = conn.zscore(&wait, &all[0].1).unwrap();
    assert_eq!(waiting, None, "a task that starts leaves the waiters");

    let again = fx
        .store
        .limit_acquire(&b, 30_000, 5_000, &all[1..2])
        .await
        .unwrap();
    assert!(matches!(again[..], [Acquired::Granted(_)]), "{again:?}");
    let n: usize = conn.zcard(&run).unwrap();
    assert_eq!(n, 2, "a holder asking again keeps its one slot");
}
