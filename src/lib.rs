//! A Redis-backed distributed task scheduler and worker framework: millions of delayed tasks,
//! each run on time, on many hosts, none lost.
//!
//! This is the crate applications depend on. It re-exports the producer client and task types
//! ([`scheduler_core`]), the worker runtime ([`scheduler_worker`]), the `#[task]` macro (feature
//! `macros`, on by default), and the `redis` crate so versions cannot drift.
//!
//! ```no_run
//! use scheduler::{task, Client, TaskError, Worker};
//! use std::time::Duration;
//!
//! #[task(queue = "emails", max_retries = 5, timeout = "30s")]
//! async fn send_reminder(user_id: u64, text: String) -> Result<(), TaskError> {
//!     println!("to {user_id}: {text}");
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! send_reminder::new(42, "hi".into())
//!     .countdown(Duration::from_secs(30))
//!     .send(&client)
//!     .await?;
//! Worker::builder()
//!     .redis_url("redis://127.0.0.1:6379")
//!     .register(send_reminder)
//!     .build()
//!     .await?
//!     .run_until_shutdown_signal()
//!     .await?;
//! # Ok(()) }
//! ```

pub use scheduler_worker::*;
