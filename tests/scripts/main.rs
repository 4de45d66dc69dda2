//! Table-driven tests of every Lua script's state transitions, in the manner of asynq's
//! `rdb_test.go`: each case seeds the keys of one partition, makes one script call through its
//! typed wrapper, and asserts the reply and the whole resulting state of the partition: every key
//! that exists, every field of every task hash and its TTL, every sorted set with its scores, the
//! stats counters, and the wake-up messages published.
//!
//! Each test starts its own `redis-server`; the cases of one test use one queue each, so they do
//! not see each other. Times that come from the Redis clock are checked against `TIME` read just
//! before and just after the call; seeded times are fixed, far in the past (`1000`) or far in the
//! future (`support::FAR`), so most scores are exact.
//!
//! One module per script (or concern); the shared runner and the expected-state model are in
//! `support`.

mod support;

mod ack;
mod batches;
mod cancel;
mod cancel_run;
mod claim;
mod deadline;
mod enqueue;
mod extend;
mod fencing;
mod headers;
mod limits;
mod lock;
mod pieces;
mod progress;
mod promote;
mod reap;
mod release;
mod release_claim;
mod requeue;
mod retry;
mod unique;
mod unreadable;
