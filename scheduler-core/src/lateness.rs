//! [`LatenessHistogram`]: how late runs started (claim time minus due time, ms), in log-spaced
//! buckets that merge by addition. Each worker keeps one per queue over the last minute and
//! writes it in its heartbeat (field `lateness:<queue>` of `<ns>:workers:<id>`); readers (the
//! dashboard's overview) add the histograms of every worker and read quantiles from the sum, so
//! a p99 across workers is computed from all their runs, not guessed from their p99s.
//!
//! Bucket 0 holds runs that started on time (lateness ≤ 0); bucket `k ≥ 1` holds lateness in
//! `(2^((k-2)/8), 2^((k-1)/8)]` ms (bucket 1: `(0, 1]`; bounds rounded up to whole ms), so a
//! quantile read as its bucket's upper bound is never below the true value and at most 9.05%
//! (`2^(1/8)`) plus 1 ms above it.

use std::collections::BTreeMap;

/// Buckets per doubling of the lateness.
const PER_DOUBLING: f64 = 8.0;
/// Buckets in all: up to `2^(MAX_BUCKET / 8)` ms, beyond 2^40 ms (35 years); later runs go in
/// the last bucket.
const MAX_BUCKET: u32 = 8 * 40 + 1;

/// Counts of run lateness in log-spaced buckets (see the module docs); sparse.
///
/// # Examples
///
/// ```
/// use scheduler_core::LatenessHistogram;
///
/// let mut a = LatenessHistogram::default();
/// for ms in 1..=100 {
///     a.record(ms);
/// }
/// let mut b = LatenessHistogram::parse("0:100").unwrap(); // 100 runs on time, from another worker
/// b.merge(&a);
/// assert_eq!(b.count(), 200);
/// assert_eq!(b.quantile(0.5), Some(0));           // half the runs were on time
/// let p99 = b.quantile(0.99).unwrap();
/// assert!((99..=109).contains(&p99));             // at most 9.05% + 1 ms above the true 99 ms
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatenessHistogram {
    /// Bucket → runs.
    buckets: BTreeMap<u32, u64>,
}

impl LatenessHistogram {
    /// The bucket of a lateness of `ms`.
    fn bucket(ms: i64) -> u32 {
        if ms <= 0 {
            return 0;
        }
        let k = (PER_DOUBLING * (ms as f64).log2()).ceil();
        // The float may land a hair above an exact bound: step back if the bucket below holds it.
        let mut k = (k.max(0.0) as u32 + 1).min(MAX_BUCKET);
        while k > 1 && Self::upper(k - 1) >= ms {
            k -= 1;
        }
        k
    }

    /// The upper bound of bucket `k`, ms, rounded up.
    fn upper(k: u32) -> i64 {
        if k == 0 {
            return 0;
        }
        (f64::from(k - 1) / PER_DOUBLING).exp2().ceil() as i64
    }

    /// Counts one run that started `ms` late (0 or less: on time).
    pub fn record(&mut self, ms: i64) {
        *self.buckets.entry(Self::bucket(ms)).or_default() += 1;
    }

    /// Adds the runs of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (k, n) in &other.buckets {
            *self.buckets.entry(*k).or_default() += n;
        }
    }

    /// Runs counted.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// Whether no run is counted.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The lateness (ms) that a fraction `q` (0 to 1) of the runs did not exceed, as the upper
    /// bound of its bucket: never below the exact quantile, at most 9.05% plus 1 ms above it. `None` when no
    /// run is counted.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (k, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(*k));
            }
        }
        self.buckets.keys().next_back().map(|k| Self::upper(*k))
    }

    /// The form stored in a heartbeat: `bucket:count` pairs joined by `,` (empty when no run).
    pub fn encode(&self) -> String {
        self.buckets
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads [`LatenessHistogram::encode`]'s form; `None` when it is not that.
    pub fn parse(s: &str) -> Option<Self> {
        let mut h = Self::default();
        for pair in s.split(',').filter(|p| !p.is_empty()) {
            let (k, n) = pair.split_once(':')?;
            let (k, n) = (k.parse::<u32>().ok()?, n.parse::<u64>().ok()?);
            if k > MAX_BUCKET {
                return None;
            }
            *h.buckets.entry(k).or_default() += n;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lateness is in the bucket whose bounds hold it, and quantiles are never below the
    /// exact value nor more than 2^(1/8) above it.
    #[test]
    fn buckets_hold_their_values() {
        for ms in (1..5000).chain([65_536, 1 << 30, i64::MAX]) {
            let k = LatenessHistogram::bucket(ms);
            assert!(LatenessHistogram::upper(k) >= ms.min(LatenessHistogram::upper(MAX_BUCKET)));
            if k > 1 && k < MAX_BUCKET {
                assert!(LatenessHistogram::upper(k - 1) < ms, "{ms} in bucket {k}");
            }
        }
        assert_eq!(LatenessHistogram::bucket(0), 0);
        assert_eq!(LatenessHistogram::bucket(-5), 0);
        assert_eq!(LatenessHistogram::bucket(1), 1);
        let mut h = LatenessHistogram::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        for (q, exact) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(got >= exact && got <= exact * 1.0905 + 1.0, "q{q}: {got}");
        }
    }

    /// Encoding round-trips; garbage is refused.
    #[test]
    fn encode_round_trips() {
        let mut h = LatenessHistogram::default();
        for ms in [0, 3, 3, 250, 10_000] {
            h.record(ms);
        }
        assert_eq!(LatenessHistogram::parse(&h.encode()), Some(h));
        assert_eq!(
            LatenessHistogram::parse(""),
            Some(LatenessHistogram::default())
        );
        assert_eq!(LatenessHistogram::parse("x"), None);
        assert_eq!(LatenessHistogram::parse("1:x"), None);
        assert_eq!(LatenessHistogram::parse("9999:1"), None);
    }
}
