//! Counting runs (lost, duplicates) and lateness percentiles.

use serde_json::{json, Value};

use crate::probe::round2;
use crate::task::Run;

/// Tasks that never ran and extra runs, for tasks numbered `0..total`.
pub(crate) fn lost_and_duplicates(runs: &[Run], total: u64) -> (u64, u64) {
    let mut seen = vec![0u32; total as usize];
    let mut stray = 0u64;
    for r in runs {
        match seen.get_mut(r.seq as usize) {
            Some(c) => *c += 1,
            None => stray += 1,
        }
    }
    let lost = seen.iter().filter(|c| **c == 0).count() as u64;
    let dups = seen
        .iter()
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum::<u64>()
        + stray;
    (lost, dups)
}

/// p50, p90, p99 and max of `values` (nearest rank), rounded to 2 decimals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// Of these values (any order).
    pub(crate) fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            round2(values[rank - 1])
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: round2(values[values.len() - 1]),
        }
    }

    /// `{p50, p90, p99, max}`.
    pub(crate) fn to_json(self) -> Value {
        json!({ "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max })
    }
}

/// Lateness of the first run of each task: claim-based (ms, Redis clock, what `TaskContext`
/// reports) and start-based (handler start on a real clock, ms with µs resolution), and how many
/// of each were early (below zero).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lateness {
    pub(crate) claim: Percentiles,
    pub(crate) start: Percentiles,
    pub(crate) early: u64,
    pub(crate) early_start: u64,
}

impl Lateness {
    /// Of these runs.
    pub(crate) fn of(runs: &[Run]) -> Self {
        let claim: Vec<f64> = runs.iter().map(|r| r.late_ms as f64).collect();
        let start: Vec<f64> = runs
            .iter()
            .map(|r| r.late_start_us as f64 / 1000.0)
            .collect();
        Self {
            early: runs.iter().filter(|r| r.late_ms < 0).count() as u64,
            early_start: runs.iter().filter(|r| r.late_start_us < 0).count() as u64,
            claim: Percentiles::of(claim),
            start: Percentiles::of(start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: u64) -> Run {
        Run {
            seq,
            late_ms: 0,
            late_start_us: 0,
            due_ms: 0,
            end_us: 0,
        }
    }

    /// A task never run is lost; a second run of one is a duplicate.
    #[test]
    fn counts_lost_and_duplicates() {
        let runs = [run(0), run(2), run(2), run(3)];
        assert_eq!(lost_and_duplicates(&runs, 4), (1, 1));
    }

    /// Nearest-rank percentiles.
    #[test]
    fn percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
    }
}
