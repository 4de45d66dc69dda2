//! Worker processes: the bench binary spawns itself with `--role worker` once per worker, so each
//! worker is a separate OS process with its own runtime and connections, as in production.
//!
//! Protocol, one line each way:
//! - the child prints `built` once its worker is connected, then waits for `go` on stdin;
//! - while running it prints `p <runs>` every 2 ms when the count changed;
//! - when its stdin closes it shuts down gracefully and prints `r <seq> <late_ms> <late_start_us>`
//!   for every run, then `end <claimed> <succeeded>`.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use scheduler::Worker;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::task::{held, noop, Recorder, Run, QUEUE};

/// What a worker process is started with.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    /// Redis URL.
    pub(crate) url: String,
    /// Key namespace.
    pub(crate) namespace: String,
    /// Shards of the bench queue.
    pub(crate) shards: u16,
    /// Tasks run at once per process.
    pub(crate) concurrency: usize,
    /// Redis clock minus local clock, µs.
    pub(crate) offset_us: i64,
    /// Seconds succeeded tasks are kept (0: deleted at once).
    pub(crate) result_ttl_secs: u64,
    /// No-op run middlewares registered on the worker (`--middleware`).
    pub(crate) middleware: usize,
    /// The archive's PostgreSQL URL: the worker runs with the archive on (`--archive-url`).
    pub(crate) archive_url: Option<String>,
}

/// A run middleware whose hooks do nothing: the cost of the mechanism itself.
struct NoopMiddleware;

#[scheduler::async_trait]
impl scheduler::middleware::Middleware for NoopMiddleware {
    async fn before(
        &self,
        _run: &scheduler::middleware::Run<'_>,
    ) -> Result<(), scheduler::TaskError> {
        Ok(())
    }

    async fn after(
        &self,
        _run: &scheduler::middleware::Run<'_>,
        _outcome: &scheduler::middleware::RunOutcome<'_>,
    ) {
    }
}

/// The child side: runs one worker until stdin closes, then reports every run on stdout.
pub(crate) async fn child_main(spec: WorkerSpec) -> Result<()> {
    let rec = Arc::new(Recorder::new(spec.offset_us));
    let mut builder = Worker::builder();
    for _ in 0..spec.middleware {
        builder = builder.middleware(NoopMiddleware);
    }
    if let Some(url) = &spec.archive_url {
        builder = builder.archive(scheduler::archive::ArchiveConfig::new(url));
    }
    let worker = builder
        .redis_url(&spec.url)
        .namespace(&spec.namespace)
        .queue_shards(QUEUE, spec.shards)
        .register(noop)
        .register(held)
        .concurrency(spec.concurrency)
        .shutdown_timeout(Duration::from_secs(5))
        .result_ttl(Duration::from_secs(spec.result_ttl_secs))
        .state(Arc::clone(&rec))
        .build()
        .await
        .context("worker build")?;
    println!("built");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await? {
            Some(l) if l.trim() == "go" => break,
            Some(_) => {}
            None => return Ok(()),
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress = {
        let rec = Arc::clone(&rec);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            use std::io::Write;
            let mut last = u64::MAX;
            while !done.load(Ordering::Relaxed) {
                let n = rec.count();
                if n != last {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "p {n}");
                    let _ = out.flush();
                    last = n;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let stop = async move { while let Ok(Some(_)) = lines.next_line().await {} };
    let report = worker.run(stop).await;
    done.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let runs = rec.take();
    let mut out = String::with_capacity(runs.len() * 24 + 64);
    for r in &runs {
        out.push_str(&format!(
            "r {} {} {} {} {}\n",
            r.seq, r.late_ms, r.late_start_us, r.due_ms, r.end_us
        ));
    }
    out.push_str(&format!("end {} {}\n", report.claimed, report.succeeded));
    let mut stdout = tokio::io::stdout();
    stdout.write_all(out.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// What one worker process reported when it stopped.
#[derive(Debug, Default)]
struct ChildReport {
    runs: Vec<Run>,
    claimed: u64,
    succeeded: u64,
}

struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    progress: Arc<AtomicU64>,
    reader: JoinHandle<Result<ChildReport>>,
}

/// The parent side: a set of worker processes.
pub(crate) struct Pool {
    procs: Vec<ChildProc>,
    cpu_at_go: u64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.procs.len())
            .finish()
    }
}

/// Every run of every worker of a pool, and what the workers counted.
#[derive(Debug, Default)]
pub(crate) struct PoolReport {
    /// Every handler run.
    pub(crate) runs: Vec<Run>,
    /// Claims, summed over workers.
    pub(crate) claimed: u64,
    /// Acknowledged runs, summed over workers.
    pub(crate) succeeded: u64,
}

impl Pool {
    /// Starts `n` worker processes and waits until each is connected.
    pub(crate) async fn spawn(n: usize, spec: &WorkerSpec) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::with_capacity(n);
        let mut built = Vec::with_capacity(n);
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args(["--role", "worker", "--redis-url", &spec.url])
                .args(["--namespace", &spec.namespace])
                .args(["--shards", &spec.shards.to_string()])
                .args(["--concurrency", &spec.concurrency.to_string()])
                .args(["--offset-us", &spec.offset_us.to_string()])
                .args(["--result-ttl-secs", &spec.result_ttl_secs.to_string()])
                .args(["--middleware", &spec.middleware.to_string()])
                .args(
                    spec.archive_url
                        .iter()
                        .flat_map(|u| ["--archive-url", u.as_str()]),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawn worker process")?;
            let stdout = child.stdout.take().context("child stdout")?;
            let stdin = child.stdin.take();
            let progress = Arc::new(AtomicU64::new(0));
            let (tx, rx) = oneshot::channel();
            let reader = tokio::spawn(read_child(stdout, Arc::clone(&progress), tx));
            built.push(rx);
            procs.push(ChildProc {
                child,
                stdin,
                progress,
                reader,
            });
        }
        for rx in built {
            tokio::time::timeout(Duration::from_secs(20), rx)
                .await
                .context("a worker process did not start within 20 s")?
                .context("a worker process exited before it was ready")?;
        }
        Ok(Self {
            procs,
            cpu_at_go: 0,
        })
    }

    /// Lets every worker start; returns the moment it did.
    pub(crate) async fn go(&mut self) -> Result<Instant> {
        self.cpu_at_go = self.cpu_ticks();
        let at = Instant::now();
        for p in &mut self.procs {
            if let Some(stdin) = p.stdin.as_mut() {
                stdin.write_all(b"go\n").await?;
                stdin.flush().await?;
            }
        }
        Ok(at)
    }

    /// Handler runs so far, over every worker (at most 2 ms old).
    pub(crate) fn runs(&self) -> u64 {
        self.procs
            .iter()
            .map(|p| p.progress.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until `target` runs happened, polling every millisecond; the moment it saw them, or
    /// `None` after `timeout`.
    pub(crate) async fn wait_runs(&self, target: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.runs() >= target {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// CPU time the worker processes used since `go`, µs (from /proc; 0 where unavailable).
    pub(crate) fn cpu_us_since_go(&self) -> u64 {
        self.cpu_ticks().saturating_sub(self.cpu_at_go) * 10_000
    }

    /// utime + stime of every worker process, in clock ticks (100 per second on Linux).
    fn cpu_ticks(&self) -> u64 {
        self.procs
            .iter()
            .filter_map(|p| p.child.id())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .map(|s| {
                // Fields after the command name (which is in parentheses and may hold spaces).
                let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = rest.split_whitespace().collect();
                let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
                get(11) + get(12)
            })
            .sum()
    }

    /// Shuts every worker down gracefully and collects what they ran.
    pub(crate) async fn stop(self) -> Result<PoolReport> {
        let mut report = PoolReport::default();
        let mut procs = self.procs;
        for p in &mut procs {
            p.stdin.take();
        }
        for mut p in procs {
            let r = tokio::time::timeout(Duration::from_secs(60), &mut p.reader)
                .await
                .context("a worker process did not stop within 60 s")???;
            let _ = p.child.wait().await;
            report.runs.extend(r.runs);
            report.claimed += r.claimed;
            report.succeeded += r.succeeded;
        }
        Ok(report)
    }
}

async fn read_child(
    stdout: tokio::process::ChildStdout,
    progress: Arc<AtomicU64>,
    built: oneshot::Sender<()>,
) -> Result<ChildReport> {
    let mut built = Some(built);
    let mut report = ChildReport::default();
    let mut lines = BufReader::with_capacity(1 << 16, stdout).lines();
    while let Some(line) = lines.next_line().await? {
        let mut f = line.split_whitespace();
        let num = |s: Option<&str>| s.and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
        match f.next() {
            Some("built") => {
                if let Some(tx) = built.take() {
                    let _ = tx.send(());
                }
            }
            Some("p") => progress.store(num(f.next()) as u64, Ordering::Relaxed),
            Some("r") => {
                let seq = num(f.next()) as u64;
                let late_ms = num(f.next());
                let late_start_us = num(f.next());
                let due_ms = num(f.next());
                let end_us = num(f.next());
                report.runs.push(Run {
                    seq,
                    late_ms,
                    late_start_us,
                    due_ms,
                    end_us,
                });
            }
            Some("end") => {
                report.claimed = num(f.next()) as u64;
                report.succeeded = num(f.next()) as u64;
                progress.store(report.runs.len() as u64, Ordering::Relaxed);
                return Ok(report);
            }
            _ => {}
        }
    }
    bail!("a worker process exited without its report")
}
