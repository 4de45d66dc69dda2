use scheduler::{task, TaskError};

#[task(priority = 10)]
async fn send(user_id: u64) -> Result<(), TaskError> {
    let _ = user_id;
    Ok(())
}

fn main() {}
