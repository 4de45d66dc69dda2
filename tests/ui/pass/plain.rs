//! The basic form: parameters become the arguments, `new` builds a call.

use scheduler::{task, Task, TaskCall, TaskError};

/// Reminds a user.
#[task(queue = "emails", max_retries = 5, timeout = "30s")]
pub async fn send_reminder(user_id: u64, text: String) -> Result<(), TaskError> {
    let _ = (user_id, text);
    Ok(())
}

fn assert_task<T: Task>(_: T) {}

fn main() {
    assert_task(send_reminder);
    let _call: TaskCall<send_reminder> = send_reminder::new(42, "hi".to_owned());
}
