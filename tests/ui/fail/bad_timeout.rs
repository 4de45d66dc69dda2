use scheduler::{task, TaskError};

#[task(timeout = "30 seconds")]
async fn send(user_id: u64) -> Result<(), TaskError> {
    let _ = user_id;
    Ok(())
}

fn main() {}
