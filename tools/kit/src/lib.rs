//! The one test kit of the workspace, used by the integration tests (`tests/`), the benchmarks
//! (`benches/`) and the chaos harness (`tools/chaos`). Not published.
//!
//! # Layout
//!
//! - [`server`]: a throwaway `redis-server` ([`RedisServer`]: free port, temp dir, killed on
//!   drop, its log printed if it never comes up); every Redis process of the kit is started
//!   through [`server::redis_server_command`].
//! - [`cluster`]: a 6-node Redis Cluster (3 masters, 3 replicas) with slot and role queries.
//! - [`sentinel`]: one master, one replica and three sentinels.
//! - [`tls`]: certificates made with `openssl` and a TLS-only `redis-server`.
//! - [`proxy`]: a TCP proxy that delays, black-holes or resets traffic to a server.
//! - [`process`]: the harness binaries of `tools/chaos` built on demand ([`tool_bin`]), signals,
//!   and a child killed on drop ([`ChildGuard`]).
//! - [`worker`]: a worker running in the test's process ([`Running`]).
//! - [`oracle`]: waiting for a task to finish, or for a condition on what tasks recorded.
//! - [`ha`]: the oracle of failover runs: a ledger of acknowledged enqueues and runs, a steady
//!   producer, and the accounting of lost, stuck, duplicated and early tasks.
//! - [`scripts`]: the scripts of `lua/` by SHA1, derived from the files.
//! - [`pg`]: a throwaway PostgreSQL database ([`pg::PgDb`]) for the history archive's tests.

pub mod cluster;
pub mod ha;
pub mod oracle;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod scripts;
pub mod sentinel;
pub mod server;
pub mod tls;
pub mod worker;

pub use process::{signal, tool_bin, ChildGuard};
pub use server::{free_port, RedisServer};
pub use worker::Running;
