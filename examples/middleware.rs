//! Middleware and progress (docs/middleware.md): a client middleware stamps a tenant on every
//! task and refuses a retired queue; two worker middlewares print their hook calls around each
//! run (a success, a retried failure, a dead task); a long task reports its progress, which the
//! producer reads with `Client::status`. Deletes its keys and exits 0.
//!
//! ```text
//! cargo run --example middleware            # Redis at redis://127.0.0.1:6379
//! REDIS_URL=redis://host:6379 cargo run --example middleware
//! ```

#[path = "demo/support.rs"]
mod support;

use std::time::Duration;

use scheduler::middleware::{EnqueueMiddleware, Middleware, Run, RunOutcome};
use scheduler::{
    async_trait, task, Backoff, Client, ClientConfig, Error, TaskContext, TaskError, TaskRequest,
    Worker,
};

/// Client middleware: a tenant on every task that has none; queue `legacy` refused.
struct Tenant(&'static str);

#[async_trait]
impl EnqueueMiddleware for Tenant {
    async fn before_enqueue(&self, req: &mut TaskRequest) -> Result<(), Error> {
        if req.queue_name() == "legacy" {
            return Err(Error::EnqueueRefused("queue legacy is retired".into()));
        }
        if req.header_map().get("tenant").is_none() {
            req.insert_header("tenant", self.0);
        }
        Ok(())
    }
}

/// Worker middleware: prints each hook call with its layer's name.
struct Trace(&'static str);

#[async_trait]
impl Middleware for Trace {
    async fn before(&self, run: &Run<'_>) -> Result<(), TaskError> {
        println!(
            "  {:<5} before  {} #{} (tenant {})",
            self.0,
            run.name(),
            run.ctx().attempt(),
            run.ctx().header("tenant").unwrap_or("-")
        );
        Ok(())
    }

    async fn after(&self, run: &Run<'_>, outcome: &RunOutcome<'_>) {
        let what = match outcome.error() {
            Some(e) => format!("failed: {e}"),
            None => "ok".to_owned(),
        };
        println!(
            "  {:<5} after   {} #{} {what}",
            self.0,
            run.name(),
            run.ctx().attempt()
        );
    }

    async fn on_dead(&self, run: &Run<'_>, error: &str) {
        println!("  {:<5} on_dead {} ({error})", self.0, run.name());
    }
}

/// Succeeds.
#[task(queue = "mwdemo")]
async fn greet(name: String) -> Result<(), TaskError> {
    println!("  handler greet {name}");
    Ok(())
}

/// Fails its first attempt.
#[task(queue = "mwdemo", max_retries = 1)]
async fn flaky(ctx: TaskContext) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::retry("upstream returned 503"));
    }
    Ok(())
}

/// Always fails: dead after its first run.
#[task(queue = "mwdemo", max_retries = 0)]
async fn doomed() -> Result<(), TaskError> {
    Err(TaskError::retry("the mail server rejected the address"))
}

/// Reports its progress in four steps.
#[task(queue = "mwdemo", timeout = "30s")]
async fn export(ctx: TaskContext, rows: u32) -> Result<(), TaskError> {
    for step in 1..=4u32 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let done = rows * step / 4;
        ctx.progress((step * 25) as u8, format!("{done} of {rows} rows"))
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("mwdemo-{}", std::process::id());
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(&ns)
            .default_shards(2)
            .middleware(Tenant("acme")),
    )
    .await?;
    let worker = Worker::builder()
        .redis_url(&url)
        .namespace(&ns)
        .default_shards(2)
        .register(greet)
        .register(flaky)
        .register(doomed)
        .register(export)
        .backoff(Backoff::Fixed(Duration::from_millis(100)))
        // Registered first: the outer layer.
        .middleware(Trace("outer"))
        .middleware(Trace("inner"))
        .build()
        .await?;
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(std::future::pending()));

    match client
        .enqueue_request(TaskRequest::new("old_job", "legacy", &())?)
        .await
    {
        Err(Error::EnqueueRefused(why)) => println!("enqueue refused: {why}"),
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }

    println!("a success:");
    let id = greet::new("ann".into()).send(&client).await?;
    client
        .wait_result::<()>(&id, Duration::from_secs(10))
        .await?;
    println!("a failure, retried:");
    let id = flaky::new().send(&client).await?;
    client
        .wait_result::<()>(&id, Duration::from_secs(10))
        .await?;
    println!("a dead task:");
    let id = doomed::new().send(&client).await?;
    let dead = client.wait_result::<()>(&id, Duration::from_secs(10)).await;
    anyhow::ensure!(matches!(dead, Err(Error::TaskFailed { .. })), "{dead:?}");
    // `on_dead` follows once Redis confirmed the burial; give it a moment to print.
    tokio::time::sleep(Duration::from_millis(100)).await;

    println!("progress of an export:");
    let id = export::new(20_000).send(&client).await?;
    let mut last = None;
    loop {
        let info = client.status(&id).await?;
        if let Some(p) = &info.progress {
            if last != Some(p.percent) {
                println!("  {:>3}% {}", p.percent, p.message);
                last = Some(p.percent);
            }
        }
        if info.state.is_finished() {
            println!("  export is {}", info.state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.shutdown();
    let report = running.await?;
    println!(
        "worker stopped: {} succeeded, {} retried, {} dead",
        report.succeeded, report.retried, report.dead
    );
    support::delete_namespace(&client, &ns).await?;
    Ok(())
}
