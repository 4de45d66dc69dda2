//! Demo tasks shared by the `worker` and `producer` examples (included with `#[path]`): what an
//! application's task module looks like.

use std::time::Duration;

use scheduler::{task, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

/// An order receipt, the result of [`render_receipt`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Receipt {
    /// The order.
    pub(crate) order_id: u64,
    /// The total in cents.
    pub(crate) total_cents: u64,
}

/// Sends a reminder to a user (here: logs it, with the lateness on the Redis clock).
#[task(queue = "emails", max_retries = 5, timeout = "30s")]
pub(crate) async fn send_reminder(
    ctx: TaskContext,
    user_id: u64,
    text: String,
) -> Result<(), TaskError> {
    tracing::info!(
        user_id,
        text,
        lateness_ms = ctx.claimed_at_ms() - ctx.due_ms(),
        "reminder sent"
    );
    Ok(())
}

/// Expires a coupon (here: waits a little, as a database call would).
#[task(queue = "default", max_retries = 3, timeout = "10s")]
pub(crate) async fn expire_coupon(code: String) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    tracing::info!(code, "coupon expired");
    Ok(())
}

/// Renders a receipt and returns it as the task's result.
#[task(queue = "default")]
pub(crate) async fn render_receipt(order_id: u64, items: Vec<u64>) -> Result<Receipt, TaskError> {
    Ok(Receipt {
        order_id,
        total_cents: items.iter().sum(),
    })
}
