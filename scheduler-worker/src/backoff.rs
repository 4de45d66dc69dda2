//! Retry backoff: how long to wait before the next attempt of a failed task.

use std::time::Duration;

use rand::Rng;

/// Delay before retry `n` (1 = first retry).
///
/// The default is exponential with full jitter, as AWS recommends and Sidekiq and asynq do in
/// spirit: a random delay in `[0, min(max, base * 2^(n-1))]`, never below `min`, so that many
/// tasks failing together do not retry together.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// `min + random(0 ..= min(max, base * factor^(n-1)))`.
    Exponential {
        /// Floor added to every delay. Default 0.
        min: Duration,
        /// Delay scale of the first retry. Default 1 s.
        base: Duration,
        /// Growth per retry. Default 2.
        factor: f64,
        /// Cap of the random part. Default 10 minutes.
        max: Duration,
        /// Whether to draw the delay at random below the bound (full jitter). Default true.
        jitter: bool,
    },
    /// The same delay every time.
    Fixed(Duration),
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            min: Duration::ZERO,
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl Backoff {
    /// Exponential backoff without jitter: `base * factor^(n-1)`, capped at `max`.
    pub fn exponential(base: Duration, factor: f64, max: Duration) -> Self {
        Backoff::Exponential {
            min: Duration::ZERO,
            base,
            factor,
            max,
            jitter: false,
        }
    }

    /// The delay before retry number `retry` (1 = first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        match self {
            Backoff::Fixed(d) => *d,
            Backoff::Exponential {
                min,
                base,
                factor,
                max,
                jitter,
            } => {
                let exp = factor.powi(retry.saturating_sub(1).min(64) as i32);
                let bound = base.as_secs_f64() * exp;
                let bound = if bound.is_finite() {
                    bound.min(max.as_secs_f64())
                } else {
                    max.as_secs_f64()
                };
                let drawn = if *jitter {
                    rand::rng().random_range(0.0..=bound.max(0.0))
                } else {
                    bound
                };
                *min + Duration::from_secs_f64(drawn.max(0.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without jitter the delays double and stop at the cap.
    #[test]
    fn exponential_doubles_then_caps() {
        let b = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
        let got: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(10_000), Duration::from_secs(1));
    }

    /// With jitter every delay lies within [min, min + bound].
    #[test]
    fn jitter_stays_in_bounds() {
        let b = Backoff::Exponential {
            min: Duration::from_millis(10),
            base: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(1),
            jitter: true,
        };
        for n in 1..20 {
            let d = b.delay(n);
            let bound = (100u64 << (n - 1).min(20)).min(1000);
            assert!(d >= Duration::from_millis(10), "{d:?}");
            assert!(d <= Duration::from_millis(10 + bound), "{n}: {d:?}");
        }
        assert_eq!(
            Backoff::Fixed(Duration::from_secs(3)).delay(7),
            Duration::from_secs(3)
        );
    }
}
