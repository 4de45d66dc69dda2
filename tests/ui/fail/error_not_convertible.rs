use scheduler::task;

// Not a `std::error::Error`, so it does not convert into `TaskError`.
#[derive(Debug)]
struct NotAnError;

#[task]
async fn send(user_id: u64) -> Result<(), NotAnError> {
    let _ = user_id;
    Err(NotAnError)
}

fn main() {
    let _ = send::new(1);
}
