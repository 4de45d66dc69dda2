use scheduler::{task, TaskError};

#[task]
async fn send((user_id, text): (u64, String)) -> Result<(), TaskError> {
    let _ = (user_id, text);
    Ok(())
}

fn main() {}
