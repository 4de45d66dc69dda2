use scheduler::{task, TaskError};

#[task(queue = 5, max_retries = "3")]
async fn send(user_id: u64) -> Result<(), TaskError> {
    let _ = user_id;
    Ok(())
}

fn main() {}
