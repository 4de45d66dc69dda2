//! Every attribute key at once, an integer timeout, and a user error type converting into
//! `TaskError` through `std::error::Error`.

use scheduler::{task, Task};

#[derive(Debug)]
struct PaymentError;

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for PaymentError {}

#[task(
    name = "billing.charge.v2",
    queue = "billing",
    max_retries = 10,
    timeout = 90,
    priority = 9,
    crate = "::scheduler"
)]
pub(crate) async fn charge(order: u64, cents: i64) -> Result<bool, PaymentError> {
    if cents < 0 {
        return Err(PaymentError);
    }
    Ok(order > 0)
}

fn main() {
    const _: () = assert!(<charge as Task>::PRIORITY == 9);
    let _ = charge::new(1, 100);
}
