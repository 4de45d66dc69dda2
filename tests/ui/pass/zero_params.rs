//! A task without parameters has `Args = ()` and a `new()` without arguments.

use scheduler::{task, Task, TaskError};

#[task(queue = "cron")]
async fn nightly_cleanup() -> Result<u64, TaskError> {
    Ok(0)
}

fn main() {
    let _: <nightly_cleanup as Task>::Args = ();
    let _: <nightly_cleanup as Task>::Output = 0u64;
    let _ = nightly_cleanup::new();
}
