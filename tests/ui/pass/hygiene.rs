//! Parameter names that match the generated code's own (`args`, `ctx`, `__args`) do not clash,
//! and the expansion adds no warnings under strict lints.

#![deny(warnings, missing_docs, unreachable_pub, missing_debug_implementations)]

use scheduler::{task, TaskContext, TaskError};

/// Parameters named like generated locals.
#[task]
pub async fn clash(
    context: TaskContext,
    args: u32,
    ctx: u32,
    __args: u32,
) -> Result<u32, TaskError> {
    let _ = context;
    Ok(args + ctx + __args)
}

fn main() {
    let _ = clash::new(1, 2, 3);
}
