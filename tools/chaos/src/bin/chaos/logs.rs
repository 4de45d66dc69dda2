//! What the workers recorded: their start and done lines, and their reports.

use crate::*;

#[derive(Default)]
pub(crate) struct Events {
    pub(crate) kills: HashMap<u32, i64>,
    pub(crate) stopped: Vec<u32>,
    /// Worker processes SIGSTOPped by `Fault::Stop`: pid, (stop ms, SIGCONT ms).
    pub(crate) stopped_at: Vec<(u32, (i64, i64))>,
    /// Promoter locks the worker stopped by `Fault::Stop` held when it was stopped (when chosen
    /// as the lock holder).
    pub(crate) stopped_locks: u64,
    pub(crate) redis_down_ms: Option<i64>,
    pub(crate) redis_up_ms: Option<i64>,
    pub(crate) termed: Vec<(u32, i64)>,
    pub(crate) term_exit_ms: Option<i64>,
    pub(crate) fault_errors: u64,
    pub(crate) restarts: u64,
    pub(crate) stalls: u64,
    /// Stale lock holder: its pid, its lock token, and when another worker held the lock.
    pub(crate) lock_holder: Option<(u32, String)>,
    pub(crate) lock_taken_over_ms: Option<i64>,
    pub(crate) lock_stop_ms: Option<i64>,
}

pub(crate) struct Start {
    pub(crate) attempt: u32,
    pub(crate) pid: u32,
    pub(crate) claimed: i64,
    /// The worker process's own (possibly skewed) clock at the start, unix ms.
    pub(crate) local: Option<i64>,
}

pub(crate) fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Starts per task id.
pub(crate) type Starts = HashMap<String, Vec<Start>>;
/// Completed runs as (id, attempt, pid).
pub(crate) type Dones = HashSet<(String, u32, u32)>;

/// Reads every run log: starts per id, done runs as (id, attempt, pid).
pub(crate) fn read_logs(dir: &Path) -> (Starts, Dones) {
    let mut starts: Starts = HashMap::new();
    let mut dones = HashSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (starts, dones);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("w-") {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let p: Vec<&str> = line.split(' ').collect();
            match (p.first(), p.len()) {
                (Some(&"S"), 6 | 7) => starts.entry(p[1].to_owned()).or_default().push(Start {
                    attempt: p[2].parse().unwrap_or(0),
                    pid: p[3].parse().unwrap_or(0),
                    claimed: p[4].parse().unwrap_or(0),
                    local: p.get(6).and_then(|v| v.parse().ok()),
                }),
                (Some(&"D"), 4) => {
                    dones.insert((
                        p[1].to_owned(),
                        p[2].parse().unwrap_or(0),
                        p[3].parse().unwrap_or(0),
                    ));
                }
                _ => {}
            }
        }
    }
    (starts, dones)
}

/// The clock offset of every worker process that started, from its clock line (`C <pid>
/// <local_ms> <redis_ms>`): its own clock minus the Redis clock, ms.
pub(crate) fn read_clock_offsets(dir: &Path) -> BTreeMap<u32, i64> {
    let mut offsets = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("w-") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            let p: Vec<&str> = line.split(' ').collect();
            if let ["C", pid, local, redis] = p[..] {
                if let (Ok(pid), Ok(local), Ok(redis)) =
                    (pid.parse(), local.parse::<i64>(), redis.parse::<i64>())
                {
                    offsets.insert(pid, local - redis);
                }
            }
        }
    }
    offsets
}

/// Sums the `key=value` reports the workers printed at graceful stops.
pub(crate) fn read_reports(dir: &Path) -> HashMap<String, u64> {
    let mut sum = HashMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("out-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            if let Some((k, v)) = line.split_once('=') {
                if k != "pid" {
                    *sum.entry(k.to_owned()).or_default() += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    sum
}

/// The report of the worker process `pid` (its `out-*.txt` holds `pid=<pid>`).
pub(crate) fn read_report_of(dir: &Path, pid: u32) -> HashMap<String, u64> {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("out-") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if text.lines().any(|l| l == format!("pid={pid}")) {
            return text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
                .collect();
        }
    }
    HashMap::new()
}
