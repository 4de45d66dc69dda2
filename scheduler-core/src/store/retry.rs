//! Retrying operations that failed transiently (connection lost, failover, Redis loading).

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// How long [`retry_transient`] keeps retrying while Redis answers `LOADING` (it is loading its
/// data set after a restart): 30 s. See [`retry_transient_for`].
pub const DEFAULT_LOADING_WAIT: Duration = Duration::from_secs(30);

/// Runs `op` and retries it while it fails with a transient error (connection lost, Redis loading,
/// failover), `attempts` times in all, backing off 50 ms, 100 ms, 200 ms... up to 2 s; while Redis
/// answers `LOADING`, it keeps retrying for up to [`DEFAULT_LOADING_WAIT`] without using attempts.
/// Same as [`retry_transient_for`] with that wait.
///
/// Use it only for operations that are safe to repeat: every script here is (enqueue is idempotent
/// by task id; fenced scripts reject a second application).
///
/// # Errors
///
/// The last error, once attempts are used up or the error is not transient.
pub async fn retry_transient<T, F, Fut>(attempts: u32, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_transient_for(attempts, DEFAULT_LOADING_WAIT, op).await
}

/// Runs `op` and retries it while it fails with a transient error, `attempts` times in all,
/// backing off 50 ms, 100 ms, 200 ms... up to 2 s.
///
/// `LOADING` replies ([`crate::Error::is_loading`]: Redis is loading its data set after a
/// restart, which takes seconds to minutes with a large AOF) have their own budget: they are
/// retried every 100-500 ms for up to `loading_wait` from the first of them, without using
/// attempts. Once that budget is spent, a `LOADING` reply counts as an ordinary transient failure;
/// with a zero `loading_wait` it always does.
///
/// Use it only for operations that are safe to repeat: every script here is (enqueue is idempotent
/// by task id; fenced scripts reject a second application).
///
/// # Errors
///
/// The last error (still a typed [`crate::Error`]), once attempts or the loading wait are used up,
/// or at once when the error is not transient.
pub async fn retry_transient_for<T, F, Fut>(
    attempts: u32,
    loading_wait: Duration,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    let mut loading_delay = Duration::from_millis(100);
    let mut loading_since: Option<tokio::time::Instant> = None;
    let mut left = attempts.max(1);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if e.is_loading() {
            let waited = loading_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed();
            if waited < loading_wait {
                tracing::debug!(error = %e, waited_ms = waited.as_millis() as u64, "Redis is loading its data set, retrying");
                tokio::time::sleep(loading_delay.min(loading_wait - waited)).await;
                loading_delay = (loading_delay * 2).min(Duration::from_millis(500));
                continue;
            }
        }
        if !e.is_transient() || left <= 1 {
            return Err(e);
        }
        left -= 1;
        tracing::debug!(error = %e, "transient Redis error, retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn loading() -> Error {
        Error::Redis(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "LOADING Redis is loading the dataset in memory",
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn loading_replies_are_retried_within_their_own_budget() {
        let calls = AtomicU32::new(0);
        // 20 LOADING replies (several seconds of loading), then success: 2 attempts suffice.
        let out = retry_transient_for(2, Duration::from_secs(30), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 20 {
                Err(loading())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 21);
    }

    #[tokio::test(start_paused = true)]
    async fn loading_past_the_budget_is_a_typed_error() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = retry_transient_for(3, Duration::from_secs(2), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(loading())
        })
        .await;
        let err = out.unwrap_err();
        assert!(err.is_loading() && err.is_transient(), "{err}");
        // Retried through the loading budget, then the ordinary attempts, then given up.
        assert!(calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_loading_wait_uses_the_attempts_only() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = retry_transient_for(3, Duration::ZERO, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(loading())
        })
        .await;
        assert!(out.unwrap_err().is_loading());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
