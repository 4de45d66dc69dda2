//! A first parameter of type `TaskContext` is passed by the worker and is not an argument.

use scheduler::{task, Task, TaskContext, TaskError};

#[task]
async fn report(ctx: TaskContext, mut count: u32) -> Result<u32, TaskError> {
    count += ctx.attempt();
    Ok(count)
}

/// The context may also be named by its full path.
#[task]
async fn report_path(ctx: scheduler::TaskContext) -> Result<String, TaskError> {
    Ok(ctx.id().to_string())
}

fn main() {
    let _: <report as Task>::Args = (1u32,);
    let _: <report_path as Task>::Args = ();
    let _ = report::new(1);
    let _ = report_path::new();
}
