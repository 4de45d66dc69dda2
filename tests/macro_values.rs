//! Value tests of what `#[task]` generates: the `Task` constants, the argument and output types,
//! and that `Task::run` runs the function's body.

use std::any::TypeId;
use std::time::Duration;

use scheduler::{task, Task, TaskCall, TaskContext, TaskError, TaskId};

/// Reminds a user.
#[task(queue = "emails", max_retries = 5, timeout = "30s")]
async fn send_reminder(user_id: u64, text: String) -> Result<String, TaskError> {
    Ok(format!("{user_id}: {text}"))
}

#[task]
async fn defaults() {}

#[task(name = "renamed.v2", timeout = "500ms", priority = 7)]
async fn renamed(n: u32) -> Result<u32, TaskError> {
    Ok(n * 2)
}

#[task(timeout = "2m", priority = 0, max_retries = 0)]
async fn two_minutes() {}

#[task(timeout = 45)]
async fn integer_timeout() {}

#[task]
async fn with_context(ctx: TaskContext, extra: u32) -> Result<(u32, String), TaskError> {
    Ok((ctx.attempt() + extra, ctx.id().to_string()))
}

#[task]
async fn io_failure(code: i32) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!("exit code {code}")))
}

#[task]
async fn gives_up(reason: String) -> Result<(), TaskError> {
    Err(TaskError::fail(reason))
}

/// A context as a worker would build it for the first attempt.
fn context() -> TaskContext {
    TaskContext::new(TaskId::new("q", "id"), 1, 0, 0, Default::default())
}

/// Whether `A` and `B` are the same type.
fn same_type<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

/// `NAME` defaults to the function's name and `name = ".."` overrides it.
#[test]
fn name_default_and_override() {
    assert_eq!(send_reminder::NAME, "send_reminder");
    assert_eq!(defaults::NAME, "defaults");
    assert_eq!(renamed::NAME, "renamed.v2");
}

/// Keys that are not written keep the trait's defaults.
#[test]
fn unset_keys_keep_trait_defaults() {
    assert_eq!(defaults::QUEUE, "default");
    assert_eq!(defaults::MAX_RETRIES, 3);
    assert_eq!(defaults::TIMEOUT, Duration::from_secs(30));
    assert_eq!(defaults::PRIORITY, 0);
}

/// `queue`, `max_retries` and `priority` become the constants, zeros included.
#[test]
fn queue_retries_priority() {
    assert_eq!(send_reminder::QUEUE, "emails");
    assert_eq!(send_reminder::MAX_RETRIES, 5);
    assert_eq!(renamed::PRIORITY, 7);
    assert_eq!(two_minutes::PRIORITY, 0);
    assert_eq!(two_minutes::MAX_RETRIES, 0);
}

/// Each timeout form becomes the right `Duration`.
#[test]
fn timeouts() {
    assert_eq!(send_reminder::TIMEOUT, Duration::from_secs(30));
    assert_eq!(renamed::TIMEOUT, Duration::from_millis(500));
    assert_eq!(two_minutes::TIMEOUT, Duration::from_secs(120));
    assert_eq!(integer_timeout::TIMEOUT, Duration::from_secs(45));
}

/// `Args` is the tuple of the parameters (without the context) and `Output` the `T` of
/// `Result<T, E>`, or `()`.
#[test]
fn args_and_output_types() {
    assert!(same_type::<<send_reminder as Task>::Args, (u64, String)>());
    assert!(same_type::<<send_reminder as Task>::Output, String>());
    assert!(same_type::<<renamed as Task>::Args, (u32,)>());
    assert!(same_type::<<defaults as Task>::Args, ()>());
    assert!(same_type::<<defaults as Task>::Output, ()>());
    assert!(same_type::<<with_context as Task>::Args, (u32,)>());
    assert!(same_type::<<with_context as Task>::Output, (u32, String)>());
    let _: TaskCall<send_reminder> = send_reminder::new(1, "x".to_owned());
    let _: TaskCall<with_context> = with_context::new(1);
}

/// `run` runs the body with the arguments unpacked from the tuple.
#[tokio::test]
async fn run_runs_the_body() {
    let out = <send_reminder as Task>::run(context(), (7, "hello".to_owned())).await;
    assert_eq!(out.unwrap(), "7: hello");
    let out = <renamed as Task>::run(context(), (21,)).await;
    assert_eq!(out.unwrap(), 42);
}

/// A function without a return type succeeds with `()`.
#[tokio::test]
async fn run_without_return_type_is_ok() {
    <defaults as Task>::run(context(), ()).await.unwrap();
}

/// The context reaches the body when the function asks for it.
#[tokio::test]
async fn run_passes_the_context() {
    let (n, id) = <with_context as Task>::run(context(), (10,)).await.unwrap();
    assert_eq!(n, 11);
    assert_eq!(id, "q/id");
}

/// The body's error converts into a `TaskError`: a std error into a retry with its text, and a
/// `TaskError` as it is.
#[tokio::test]
async fn run_converts_errors() {
    let err = <io_failure as Task>::run(context(), (3,))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), scheduler::TaskErrorKind::Retry);
    assert_eq!(err.message(), "exit code 3");
    let err = <gives_up as Task>::run(context(), ("no".to_owned(),))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), scheduler::TaskErrorKind::Fail);
    assert_eq!(err.message(), "no");
}
