use scheduler::{task, TaskError};

#[task]
async fn send<T: ToString>(value: T) -> Result<(), TaskError> {
    let _ = value.to_string();
    Ok(())
}

fn main() {}
