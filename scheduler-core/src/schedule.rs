//! Periodic schedules: what a [`Schedule`] is (a cron expression in a time zone, or a fixed
//! interval, bound to one task call), how its ticks are computed, and what a process does with
//! the ticks that are due (`plan`). Storing and firing them is [`crate::Schedules`]; how
//! exactly-once works is in `docs/schedules.md`.
//!
//! # Ticks
//!
//! - **Cron** (`cron` crate syntax, 5 fields `min hour day month weekday` or 6–7 with seconds
//!   first and an optional year): evaluated on the wall clock of the schedule's IANA time zone
//!   (`chrono-tz`). A local time that happens twice (the autumn change) fires **once**, at its
//!   first occurrence; a local time that does not exist (the spring change) fires once at the
//!   end of the gap (a 02:30 daily job runs at 03:00 on that day).
//! - **Interval**: the multiples of the interval since the unix epoch (every 1 s on the second,
//!   every 1 h on the hour UTC), so every process computes the same ticks without a stored anchor.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;

use chrono::{LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

use crate::client::{TaskCall, TaskRequest};
use crate::error::{Error, Result};
use crate::task::Task;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A cron expression evaluated in an IANA time zone.
    Cron {
        /// The expression as given (5 fields, or 6–7 with seconds first).
        expr: String,
        /// The time zone's IANA name, e.g. `Europe/Paris` or `UTC`.
        tz: String,
    },
    /// Every interval, on its multiples since the unix epoch.
    Every(Duration),
}

/// What to do with ticks that passed while nothing fired them (every worker down, the schedule
/// paused): per schedule, [`Misfire::Skip`] by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misfire {
    /// Drop them; continue with the next tick to come.
    #[default]
    Skip,
    /// Fire the latest of them once, at once, then continue with the next tick to come.
    FireOnce,
    /// Fire the latest `n` of them, at once, oldest first.
    CatchUp(u32),
}

/// Whether a tick fires while the previous run of the same schedule is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Fire every tick (the default).
    #[default]
    Allow,
    /// Skip a tick while the previous run is still queued or running (counted in `skipped`).
    Skip,
}

/// A periodic schedule: a name, when it fires ([`Spec`]), the task call each tick enqueues, and
/// its [`Misfire`] and [`Overlap`] policies.
///
/// Declare it on the worker (`WorkerBuilder::schedule`) or add it at run time with
/// [`crate::Schedules::add`]; both store the same record in Redis.
///
/// # Examples
///
/// ```
/// # use scheduler_core::{Task, TaskCall, TaskContext, TaskError};
/// # struct Report;
/// # impl Task for Report {
/// #     const NAME: &'static str = "report";
/// #     type Args = (u32,);
/// #     type Output = ();
/// #     async fn run(_: TaskContext, _: (u32,)) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use scheduler_core::schedule::{Misfire, Schedule};
/// use std::time::Duration;
///
/// let daily = Schedule::cron("daily-report", "0 30 2 * * *", "Europe/Paris")?
///     .task(TaskCall::<Report>::new((7,)))?
///     .misfire(Misfire::FireOnce);
/// let often = Schedule::every("ping", Duration::from_secs(10))?.task(TaskCall::<Report>::new((1,)))?;
/// assert!(Schedule::cron("bad", "not cron", "UTC").is_err());
/// assert!(Schedule::every("zero", Duration::ZERO).is_err());
/// # Ok::<(), scheduler_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) spec: Spec,
    pub(crate) request: Option<TaskRequest>,
    pub(crate) misfire: Misfire,
    pub(crate) overlap: Overlap,
}

impl Schedule {
    /// A schedule firing on cron expression `expr` in time zone `tz` (an IANA name).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSchedule`] for a bad name (1–64 of `A-Z a-z 0-9 _ - .`), an invalid
    /// expression or an unknown time zone.
    pub fn cron(name: impl Into<String>, expr: &str, tz: &str) -> Result<Self> {
        let spec = Spec::Cron {
            expr: expr.to_owned(),
            tz: tz.to_owned(),
        };
        Self::new(name.into(), spec)
    }

    /// A schedule firing every `interval`, on its multiples since the unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSchedule`] for a bad name or an interval under 1 ms.
    pub fn every(name: impl Into<String>, interval: Duration) -> Result<Self> {
        Self::new(name.into(), Spec::Every(interval))
    }

    fn new(name: String, spec: Spec) -> Result<Self> {
        validate_name(&name)?;
        Ticks::new(&spec).map_err(|reason| Error::InvalidSchedule {
            name: name.clone(),
            reason,
        })?;
        Ok(Self {
            name,
            spec,
            request: None,
            misfire: Misfire::default(),
            overlap: Overlap::default(),
        })
    }

    /// Each tick enqueues `call`: its task, arguments, queue, priority, retries and time limit.
    /// A `countdown`, `eta` or `id` on the call is ignored: the tick sets the due time and id.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the arguments cannot be encoded.
    pub fn task<T: Task>(self, call: TaskCall<T>) -> Result<Self> {
        Ok(self.request(call.into_request()?))
    }

    /// As [`Schedule::task`], with an untyped request (for a task this process has no type for).
    pub fn request(mut self, req: TaskRequest) -> Self {
        self.request = Some(req);
        self
    }

    /// The misfire policy (default [`Misfire::Skip`]).
    pub fn misfire(mut self, m: Misfire) -> Self {
        self.misfire = m;
        self
    }

    /// The overlap policy (default [`Overlap::Allow`]).
    pub fn overlap(mut self, o: Overlap) -> Self {
        self.overlap = o;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it fires.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The task name its ticks run, once [`Schedule::task`] or [`Schedule::request`] was given.
    pub fn task_name(&self) -> Option<&str> {
        self.request.as_ref().map(|r| r.name.as_str())
    }
}

/// Schedule names follow the queue-name rules: they appear in key names and task ids.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSchedule {
            name: name.to_owned(),
            reason: "use 1-64 characters of A-Z a-z 0-9 _ - .".into(),
        })
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    validate_name(name)
}

/// A spec made ready to compute ticks.
#[derive(Debug, Clone)]
pub(crate) enum Ticks {
    Cron(Box<cron::Schedule>, Tz),
    Every(i64),
}

impl Ticks {
    /// Parses `spec`; the error is a reason text.
    pub(crate) fn new(spec: &Spec) -> std::result::Result<Self, String> {
        match spec {
            Spec::Every(d) => {
                let ms = d.as_millis();
                if ms == 0 {
                    return Err("the interval must be at least 1 ms".into());
                }
                i64::try_from(ms)
                    .map(Ticks::Every)
                    .map_err(|_| "interval too long".into())
            }
            Spec::Cron { expr, tz } => {
                let tz = Tz::from_str(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
                let fields = expr.split_whitespace().count();
                let full = match fields {
                    5 => format!("0 {expr}"),
                    6 | 7 => expr.clone(),
                    _ => {
                        return Err(format!(
                            "cron expression {expr:?} has {fields} fields: use 5 (min hour day month weekday) or 6-7 (seconds first, optional year)"
                        ))
                    }
                };
                let s = cron::Schedule::from_str(&full)
                    .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
                Ok(Ticks::Cron(Box::new(s), tz))
            }
        }
    }

    /// The first tick strictly after `t_ms` (unix ms), or `None` when there is none (a cron
    /// expression whose years have all passed).
    pub(crate) fn next_after(&self, t_ms: i64) -> Option<i64> {
        match self {
            Ticks::Every(iv) => Some((t_ms.div_euclid(*iv) + 1) * iv),
            Ticks::Cron(s, tz) => cron_next_after(s, *tz, t_ms),
        }
    }
}

/// The cron expression is evaluated on naive local times (as if in UTC), and each candidate
/// mapped to an instant in `tz`: an ambiguous local time to its first instant, a local time in a
/// gap to the end of the gap. That map never decreases, so the first candidate whose instant is
/// after `t_ms` is the next tick, and times that collapse (a gap, a repeated hour) fire once.
fn cron_next_after(s: &cron::Schedule, tz: Tz, t_ms: i64) -> Option<i64> {
    let t = Utc.timestamp_millis_opt(t_ms).single()?;
    let local = t.with_timezone(&tz).naive_local();
    // Inside a repeated hour, local times before `local` may map after `t`: start earlier.
    let start = match tz.from_local_datetime(&local) {
        LocalResult::Single(_) => local,
        _ => local - chrono::Duration::hours(3),
    };
    // Bounded: a valid candidate maps after `t` within a few hours of candidates at most.
    for cand in s.after(&Utc.from_utc_datetime(&start)).take(1_000_000) {
        let naive = cand.naive_utc();
        let inst = match tz.from_local_datetime(&naive) {
            LocalResult::Single(x) => x,
            LocalResult::Ambiguous(first, _) => first,
            LocalResult::None => gap_end(tz, naive)?,
        };
        let ms = inst.timestamp_millis();
        if ms > t_ms {
            return Some(ms);
        }
    }
    None
}

/// The first valid local time after `naive`, which lies in a gap (zones' gaps end on a minute).
fn gap_end(tz: Tz, naive: chrono::NaiveDateTime) -> Option<chrono::DateTime<Tz>> {
    let base = naive.date().and_hms_opt(
        chrono::Timelike::hour(&naive),
        chrono::Timelike::minute(&naive),
        0,
    )?;
    (1..=24 * 60).find_map(|k| {
        tz.from_local_datetime(&(base + chrono::Duration::minutes(k)))
            .earliest()
    })
}

/// What one write of a schedule does: the ticks to enqueue (tick time, due time), the next tick
/// not enqueued after it, and the ticks dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fire: Vec<i64>,
    pub(crate) new_next: Option<i64>,
    pub(crate) skipped: u64,
}

/// Most missed ticks walked one by one; beyond, the walk jumps to now (and counts no more).
const MISSED_WALK: usize = 10_000;

/// Most ticks one write enqueues.
pub(crate) const MAX_FIRE: usize = 100;

/// The plan for a schedule whose first tick not yet enqueued is `next`, at server time `now`,
/// enqueueing the ticks due within `lookahead_ms`. Ticks before `now` were missed and follow
/// `misfire`; with [`Overlap::Skip`] at most one tick is enqueued at a time.
pub(crate) fn plan(
    ticks: &Ticks,
    misfire: Misfire,
    overlap: Overlap,
    next: i64,
    now: i64,
    lookahead_ms: i64,
) -> Plan {
    let keep = match misfire {
        Misfire::Skip => 0,
        Misfire::FireOnce => 1,
        Misfire::CatchUp(n) => n as usize,
    }
    .min(MAX_FIRE);
    let mut kept = VecDeque::new();
    let mut missed: u64 = 0;
    let mut t = Some(next);
    let mut walked = 0;
    while let Some(x) = t.filter(|x| *x < now) {
        if walked == MISSED_WALK {
            t = ticks.next_after(now - 1);
            break;
        }
        missed += 1;
        walked += 1;
        kept.push_back(x);
        if kept.len() > keep {
            kept.pop_front();
        }
        t = ticks.next_after(x);
    }
    let mut skipped = missed - kept.len() as u64;
    let mut fire: Vec<i64> = kept.into();
    if overlap == Overlap::Skip {
        if fire.len() > 1 {
            skipped += fire.len() as u64 - 1;
            fire.drain(..fire.len() - 1);
        }
        if fire.is_empty() {
            if let Some(u) = t.filter(|u| *u <= now + lookahead_ms) {
                fire.push(u);
                t = ticks.next_after(u);
            }
        }
        return Plan {
            fire,
            new_next: t,
            skipped,
        };
    }
    while let Some(u) = t.filter(|u| *u <= now + lookahead_ms) {
        if fire.len() >= MAX_FIRE {
            break;
        }
        fire.push(u);
        t = ticks.next_after(u);
    }
    Plan {
        fire,
        new_next: t,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn ms(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.from_local_datetime(
            &NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, 0)
                .unwrap(),
        )
        .earliest()
        .unwrap()
        .timestamp_millis()
    }

    fn show(tz: Tz, t: i64) -> String {
        Utc.timestamp_millis_opt(t)
            .unwrap()
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    fn ticks(expr: &str, tz: &str) -> (Ticks, Tz) {
        let spec = Spec::Cron {
            expr: expr.into(),
            tz: tz.into(),
        };
        (Ticks::new(&spec).unwrap(), tz.parse().unwrap())
    }

    /// The next `n` ticks after local midnight of the given day, as local text.
    fn after(expr: &str, tz: &str, y: i32, mo: u32, d: u32, n: usize) -> Vec<String> {
        let (t, z) = ticks(expr, tz);
        let mut at = ms(z, y, mo, d, 0, 0);
        (0..n)
            .map(|_| {
                at = t.next_after(at).unwrap();
                show(z, at)
            })
            .collect()
    }

    /// A 02:30 daily job on the spring-forward day runs once, at the end of the gap (03:00),
    /// and at 02:30 on the days around it; Europe/Paris and America/New_York.
    #[test]
    fn daily_0230_on_spring_forward_days() {
        assert_eq!(
            after("0 30 2 * * *", "Europe/Paris", 2026, 3, 28, 3),
            [
                "2026-03-28 02:30:00 CET",
                "2026-03-29 03:00:00 CEST",
                "2026-03-30 02:30:00 CEST"
            ]
        );
        assert_eq!(
            after("30 2 * * *", "America/New_York", 2026, 3, 7, 3),
            [
                "2026-03-07 02:30:00 EST",
                "2026-03-08 03:00:00 EDT",
                "2026-03-09 02:30:00 EDT"
            ]
        );
    }

    /// On the fall-back day 02:30 (Paris) or 01:30 (New York) happens twice: the job runs once,
    /// at the first; the 02:30 New York job is unaffected.
    #[test]
    fn daily_jobs_on_fall_back_days_run_once() {
        assert_eq!(
            after("0 30 2 * * *", "Europe/Paris", 2026, 10, 24, 3),
            [
                "2026-10-24 02:30:00 CEST",
                "2026-10-25 02:30:00 CEST",
                "2026-10-26 02:30:00 CET"
            ]
        );
        assert_eq!(
            after("0 30 1 * * *", "America/New_York", 2026, 10, 31, 3),
            [
                "2026-10-31 01:30:00 EDT",
                "2026-11-01 01:30:00 EDT",
                "2026-11-02 01:30:00 EST"
            ]
        );
        assert_eq!(
            after("0 30 2 * * *", "America/New_York", 2026, 10, 31, 3),
            [
                "2026-10-31 02:30:00 EDT",
                "2026-11-01 02:30:00 EST",
                "2026-11-02 02:30:00 EST"
            ]
        );
    }

    /// Ticks from inside a repeated hour go forward: an hourly job fires at 01:00 EDT, not again
    /// at 01:00 EST, then 02:00 EST; asking from 01:30 EST gives 02:00 EST.
    #[test]
    fn hourly_job_over_fall_back_never_goes_back() {
        assert_eq!(
            after("0 0 * * * *", "America/New_York", 2026, 11, 1, 3),
            [
                "2026-11-01 01:00:00 EDT",
                "2026-11-01 02:00:00 EST",
                "2026-11-01 03:00:00 EST"
            ]
        );
        let (t, z) = ticks("0 0 * * * *", "America/New_York");
        // 01:30 EST is 06:30 UTC.
        let from = Utc
            .with_ymd_and_hms(2026, 11, 1, 6, 30, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            show(z, t.next_after(from).unwrap()),
            "2026-11-01 02:00:00 EST"
        );
    }

    /// Month ends: day 31 fires only in months that have one, day 30 skips February.
    #[test]
    fn month_ends() {
        assert_eq!(
            after("0 0 9 31 * *", "UTC", 2026, 1, 1, 4),
            [
                "2026-01-31 09:00:00 UTC",
                "2026-03-31 09:00:00 UTC",
                "2026-05-31 09:00:00 UTC",
                "2026-07-31 09:00:00 UTC"
            ]
        );
        assert_eq!(
            after("0 0 0 30 * *", "Europe/Paris", 2026, 1, 31, 2),
            ["2026-03-30 00:00:00 CEST", "2026-04-30 00:00:00 CEST"]
        );
    }

    /// Leap days: February 29 fires only in leap years (2028, 2032).
    #[test]
    fn leap_days() {
        assert_eq!(
            after("0 0 12 29 2 *", "America/New_York", 2026, 1, 1, 2),
            ["2028-02-29 12:00:00 EST", "2032-02-29 12:00:00 EST"]
        );
    }

    /// Intervals tick on their multiples since the epoch; bad specs are refused with a reason.
    #[test]
    fn intervals_and_bad_specs() {
        let t = Ticks::new(&Spec::Every(Duration::from_secs(1))).unwrap();
        assert_eq!(t.next_after(1_500), Some(2_000));
        assert_eq!(t.next_after(2_000), Some(3_000));
        assert!(Ticks::new(&Spec::Every(Duration::ZERO)).is_err());
        assert!(Ticks::new(&Spec::Every(Duration::from_micros(10))).is_err());
        for (expr, tz) in [
            ("0 30 2 * * *", "Mars/Olympus"),
            ("61 * * * * *", "UTC"),
            ("* * *", "UTC"),
            ("x y z a b", "UTC"),
        ] {
            let spec = Spec::Cron {
                expr: expr.into(),
                tz: tz.into(),
            };
            assert!(Ticks::new(&spec).is_err(), "{expr} {tz}");
        }
        // Five fields: minutes first, seconds 0.
        let (t, z) = ticks("*/15 * * * *", "UTC");
        let at = ms(z, 2026, 1, 1, 0, 0);
        assert_eq!(t.next_after(at), Some(at + 15 * 60_000));
    }

    /// Misfire policies over missed ticks 1..=5 s at now = 5.5 s, lookahead 2 s (ticks 6, 7).
    #[test]
    fn plans_follow_misfire_and_overlap_policies() {
        let t = Ticks::new(&Spec::Every(Duration::from_secs(1))).unwrap();
        let p = |m, o| plan(&t, m, o, 1_000, 5_500, 2_000);
        let skip = p(Misfire::Skip, Overlap::Allow);
        assert_eq!(
            (skip.fire, skip.new_next, skip.skipped),
            (vec![6_000, 7_000], Some(8_000), 5)
        );
        let once = p(Misfire::FireOnce, Overlap::Allow);
        assert_eq!((once.fire, once.skipped), (vec![5_000, 6_000, 7_000], 4));
        let two = p(Misfire::CatchUp(2), Overlap::Allow);
        assert_eq!(
            (two.fire, two.skipped),
            (vec![4_000, 5_000, 6_000, 7_000], 3)
        );
        let ov = p(Misfire::CatchUp(2), Overlap::Skip);
        assert_eq!(
            (ov.fire, ov.new_next, ov.skipped),
            (vec![5_000], Some(6_000), 4)
        );
        let ov = p(Misfire::Skip, Overlap::Skip);
        assert_eq!(
            (ov.fire, ov.new_next, ov.skipped),
            (vec![6_000], Some(7_000), 5)
        );
        // Nothing missed, next tick beyond the lookahead: nothing to do.
        let idle = plan(&t, Misfire::Skip, Overlap::Allow, 9_000, 5_500, 2_000);
        assert_eq!(
            (idle.fire, idle.new_next, idle.skipped),
            (vec![], Some(9_000), 0)
        );
    }
}
