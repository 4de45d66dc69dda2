use scheduler::{task, TaskError};

#[task(cron = "0 * * * *")]
async fn report(user_id: u64) -> Result<(), TaskError> {
    let _ = user_id;
    Ok(())
}

fn main() {}
