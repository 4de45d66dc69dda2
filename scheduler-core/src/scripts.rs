//! The inputs and replies of the Lua scripts, by their historical path: each lives in
//! [`crate::store`] next to the typed wrapper of its script (one file per script family), and is
//! re-exported here so that `scheduler_core::scripts::X` keeps working.

pub use crate::store::{
    with_prelude, AckItem, CancelReply, Claim, Claimed, DeleteReply, Due, FailItem, NewTask,
    Outcome, Promoted, Reaped, RequeueReply, Riders, MAX_BATCH,
};
