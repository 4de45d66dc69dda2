//! The promoter lock of a partition: taken with `SET NX PX`, taken over with `SET PX GET`,
//! renewed and released by `lock_renew.lua` and `lock_release.lua` (compare-and-set).

use std::sync::LazyLock;

use redis::Script;

use super::reply::int;
use super::{Partition, Store};
use crate::error::Result;

static LOCK_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/lock_renew.lua")));
static LOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/lock_release.lua")));

impl Store {
    /// Takes the promoter lock of `p` with `token` for `ttl_ms` (`SET NX PX`); true if we got it.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_acquire(&self, p: &Partition, token: &str, ttl_ms: u64) -> Result<bool> {
        let mut conn = self.conn();
        let v: Option<String> = redis::cmd("SET")
            .arg(p.keys.lock())
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        Ok(v.is_some())
    }

    /// Takes the promoter lock of `p` with `token` for `ttl_ms` whoever holds it (`SET PX GET`),
    /// returning the previous holder's token. For a promoter that found the partition's due work
    /// untouched past its holder's due time: the holder is stalled, dead or cut off, and a lock
    /// only avoids wasted work, so taking it over is always safe.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_take_over(
        &self,
        p: &Partition,
        token: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let v: Option<String> = redis::cmd("SET")
            .arg(p.keys.lock())
            .arg(token)
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        Ok(v)
    }

    /// `lock_renew.lua`: extends our promoter lock of `p`; false if we no longer hold it.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_renew(&self, p: &Partition, token: &str, ttl_ms: u64) -> Result<bool> {
        let mut inv = LOCK_RENEW.prepare_invoke();
        inv.key(p.keys.lock()).arg(token).arg(ttl_ms);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }

    /// `lock_release.lua`: deletes our promoter lock of `p` (compare-and-delete).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_release(&self, p: &Partition, token: &str) -> Result<bool> {
        let mut inv = LOCK_RELEASE.prepare_invoke();
        inv.key(p.keys.lock()).arg(token);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }
}
