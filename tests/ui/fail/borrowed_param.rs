use scheduler::{task, TaskError};

#[task]
async fn send(text: &str) -> Result<(), TaskError> {
    let _ = text;
    Ok(())
}

fn main() {}
