//! A task without a return type succeeds with `()` whenever its body finishes.

use scheduler::{task, Task};

#[task]
async fn log_line(line: String) {
    if line.is_empty() {
        return;
    }
    println!("{line}");
}

fn main() {
    let _: <log_line as Task>::Output = ();
    let _ = log_line::new("x".to_owned());
}
