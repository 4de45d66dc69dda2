//! The `#[task]` attribute macro of the scheduler.
//!
//! Use it through the `scheduler` crate (`scheduler::task`), which re-exports it behind its
//! default `macros` feature; the generated code reaches the scheduler's types through the hidden
//! `scheduler::__private` module, so your crate needs no other dependency.
//!
//! # Layout
//!
//! - `lib.rs`: this shim, the only place that touches `proc_macro` types.
//! - `task.rs`: attribute parsing, signature checks and code generation on `proc_macro2`
//!   tokens, with its unit tests.

mod task;

/// Turns an `async fn` into a task: a unit struct of the same name implementing `Task`.
///
/// ```ignore
/// use scheduler::{task, TaskError};
///
/// /// Reminds a user.
/// #[task(queue = "emails", max_retries = 5, timeout = "30s")]
/// pub async fn send_reminder(user_id: u64, text: String) -> Result<(), TaskError> {
///     Ok(())
/// }
///
/// // `send_reminder` is now a struct: register it with a worker, or enqueue a call:
/// // send_reminder::new(42, "hello".into()).send(&client).await?;
/// ```
///
/// # Attribute keys
///
/// All are optional; an omitted key takes the `Task` trait's default.
///
/// | key           | value                                    | default                  |
/// |---------------|------------------------------------------|--------------------------|
/// | `name`        | string: the registered task name         | the function's name      |
/// | `queue`       | string: 1-64 of `A-Z a-z 0-9 _ - .`      | `"default"`              |
/// | `max_retries` | `u32` literal                            | 3                        |
/// | `timeout`     | `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or an integer of seconds | 30 s |
/// | `priority`    | integer 0 (lowest) to 9 (highest)        | 0                        |
/// | `cron`        | string: a cron expression (5 fields, or 6-7 with seconds first); only for a task without arguments | none |
/// | `tz`          | string: the IANA time zone of `cron`     | `"UTC"`                  |
/// | `crate`       | string path to the facade crate          | `"::scheduler"`          |
///
/// # The function
///
/// - It must be `async`, without `self`, generics or `impl Trait` parameters.
/// - Its parameters must be `name: Type` (or `mut name: Type`) with owned types; together they
///   form the task's arguments, serialized as a tuple.
/// - Its first parameter may be a `TaskContext` (recognised by the type's name), which the
///   worker passes in and which is not part of the arguments.
/// - It returns `Result<T, E>` where `E` converts into `TaskError` (any `std::error::Error`
///   does), or nothing.
///
/// # What it generates
///
/// A unit struct named like the function (with the function's doc comments), with
/// `new(args..) -> TaskCall<Self>` to build a call, and a `Task` impl whose `run` calls the
/// original body. Only the constants you set are written; the rest keep the trait's defaults.
///
/// # Errors
///
/// With `cron`, a worker that registers the task declares a periodic schedule named after the
/// task (exactly once per tick on any number of workers; `docs/schedules.md`); the expression and
/// zone are checked when the worker is built (`Error::InvalidSchedule`).
///
/// An unknown key, a value of the wrong type, a malformed timeout, a priority above 9, `cron` on
/// a task with arguments or an unsupported signature is a compile error pointing at the offending tokens; the function is
/// then left as written.
#[proc_macro_attribute]
pub fn task(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    task::expand(attr.into(), item.into()).into()
}
