//! `time_travel.lua`: scheduled tasks made due now, in namespaces marked for tests only (feature
//! `testing`; the user-facing helpers are `scheduler::testing`).

use std::sync::LazyLock;

use redis::Script;

use super::reply::int;
use super::script::script;
use super::{Partition, Store};
use crate::error::{Error, Result};

static TIME_TRAVEL: LazyLock<Script> = script!("time_travel");

/// Which scheduled tasks of a partition [`Store::time_travel`] makes due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Travel<'a> {
    /// Those due within this many ms from now, at most `most` of them, earliest first.
    Window {
        /// The window, in ms from now.
        ms: u64,
        /// The most tasks moved by one call.
        most: u32,
    },
    /// These ids, those of them that are scheduled.
    Ids(&'a [&'a str]),
}

impl Store {
    /// Key `<ns>:testing`: the marker of a namespace whose scheduled tasks may be made due early
    /// ([`Store::time_travel`]). Only `scheduler::testing::TestRedis` writes it.
    pub fn test_marker(&self) -> String {
        format!("{}:testing", self.keys.namespace())
    }

    /// `time_travel.lua`: makes scheduled tasks of `p` due now and wakes the promoter; returns
    /// how many moved.
    ///
    /// # Errors
    ///
    /// [`Error::NotATestNamespace`] when the namespace has no test marker (nothing changed);
    /// a Redis error.
    pub async fn time_travel(&self, p: &Partition, what: Travel<'_>) -> Result<u64> {
        let mut inv = TIME_TRAVEL.prepare_invoke();
        inv.key(self.test_marker())
            .key(p.keys.scheduled())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        match what {
            Travel::Window { ms, most } => inv.arg(ms).arg(most.max(1)),
            Travel::Ids(ids) => inv.arg(-1).arg(0).arg(ids),
        };
        match int(&self.run_script(&inv).await?)? {
            -1 => Err(Error::NotATestNamespace(self.keys.namespace().to_owned())),
            n => Ok(n as u64),
        }
    }
}
