//! worker
pub use scheduler_core::*;
#[cfg(feature = "macros")]
pub use scheduler_macros::task;
