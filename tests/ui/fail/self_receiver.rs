use scheduler::{task, TaskError};

struct Mailer;

impl Mailer {
    #[task]
    async fn send(&self, user_id: u64) -> Result<(), TaskError> {
        let _ = user_id;
        Ok(())
    }
}

fn main() {}
