//! Task headers through the public API: set by the producer, read by the handler on every
//! attempt, shown by status and `Inspector::task`, carried by export and import; oversized
//! headers refused at enqueue with a typed error and nothing written.

use std::sync::Mutex;
use std::time::Duration;

use scheduler::backup::format::FORMAT_VERSION;
use scheduler::backup::{Exporter, Importer};
use scheduler::headers::{self, Headers, MAX_HEADERS_BYTES, MAX_HEADER_ENTRIES};
use scheduler::{
    task, Client, ClientConfig, Error, Inspector, TaskContext, TaskError, TaskRequest, Worker,
};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};

/// (attempt, headers) of each run.
static RUNS: Mutex<Vec<(u32, Headers)>> = Mutex::new(Vec::new());

/// Notes its headers and fails its first attempt.
#[task(name = "tenant_job", queue = "hdr", max_retries = 1)]
async fn tenant_job(ctx: TaskContext) -> Result<(), TaskError> {
    RUNS.lock()
        .unwrap()
        .push((ctx.attempt(), ctx.headers().clone()));
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after("once more", Duration::ZERO));
    }
    Ok(())
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// The handler sees the producer's headers on both attempts; status and `Inspector::task` show
/// them; a task without headers has no `headers` field at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_headers_on_every_attempt() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "hdr").await;
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("hdr")
            .register(tenant_job),
    )
    .await;
    let id = tenant_job::new()
        .header("tenant", "42")
        .header("request_id", "r-7f3a")
        .send(&c)
        .await
        .unwrap();
    let info = wait_finished(&c, &id, Duration::from_secs(20)).await;
    w.stop().await;
    let want: Headers = [("tenant", "42"), ("request_id", "r-7f3a")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(info.attempts, 2);
    assert_eq!(info.headers, want);
    assert_eq!(
        *RUNS.lock().unwrap(),
        vec![(1, want.clone()), (2, want.clone())]
    );
    let detail = Inspector::new(&c).task(&id).await.unwrap();
    assert_eq!(
        headers::decode(&detail.fields["headers"]).unwrap(),
        want,
        "the pieces are joined"
    );
    assert_eq!(detail.info.unwrap().headers, want);

    let plain = c
        .enqueue_request(TaskRequest::new("other", "plain", &()).unwrap())
        .await
        .unwrap();
    let detail = Inspector::new(&c).task(&plain).await.unwrap();
    assert!(!detail.fields.keys().any(|f| f.starts_with("headers")));
    assert!(c.status(&plain).await.unwrap().headers.is_empty());
}

/// Over 64 entries or 8 KiB encoded: `HeadersTooLarge` at enqueue, and no task is written,
/// neither the bad one nor the good one of the same bulk call.
#[tokio::test]
async fn oversized_headers_are_refused_and_nothing_is_written() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "big").await;
    let many = (0..=MAX_HEADER_ENTRIES).map(|i| (format!("k{i}"), "v".to_owned()));
    let req = TaskRequest::new("job", "big", &())
        .unwrap()
        .id("many")
        .headers(many);
    match c.enqueue_request(req).await {
        Err(Error::HeadersTooLarge { entries, .. }) => assert_eq!(entries, 65),
        other => panic!("{other:?}"),
    }
    let good = TaskRequest::new("job", "big", &()).unwrap().id("good");
    let huge = TaskRequest::new("job", "big", &())
        .unwrap()
        .id("huge")
        .header("blob", "x".repeat(MAX_HEADERS_BYTES));
    let err = c.enqueue_bulk(vec![good, huge]).await.unwrap_err();
    assert!(matches!(err, Error::HeadersTooLarge { bytes, .. } if bytes > MAX_HEADERS_BYTES));
    assert_eq!(err.kind(), "headers_too_large");
    for id in ["many", "good", "huge"] {
        let id = format!("big/{id}").parse().unwrap();
        assert!(matches!(c.status(&id).await, Err(Error::NotFound(_))));
    }
    // At the bound exactly: accepted.
    let at = (0..MAX_HEADER_ENTRIES).map(|i| (format!("k{i}"), "v".to_owned()));
    let req = TaskRequest::new("job", "big", &()).unwrap().headers(at);
    let id = c.enqueue_request(req).await.unwrap();
    assert_eq!(
        c.status(&id).await.unwrap().headers.len(),
        MAX_HEADER_ENTRIES
    );
}

/// Export then import into another namespace: headers come back as they were (format version
/// 2 and later); a task without headers stays without.
#[tokio::test]
async fn export_and_import_keep_headers() {
    let redis = RedisServer::start();
    let src = client(&redis.url(), "src").await;
    let with = src
        .enqueue_request(
            TaskRequest::new("job", "q", &1u8)
                .unwrap()
                .id("with")
                .countdown(Duration::from_secs(3600))
                .header("tenant", "7"),
        )
        .await
        .unwrap();
    let without = src
        .enqueue_request(TaskRequest::new("job", "q", &2u8).unwrap().id("without"))
        .await
        .unwrap();
    let mut file = Vec::new();
    Exporter::new(&src).export(&mut file, |_| {}).await.unwrap();
    assert_eq!(u16::from_be_bytes([file[8], file[9]]), FORMAT_VERSION);
    let dst = client(&redis.url(), "dst").await;
    let done = Importer::new(&dst).import(&file[..], |_| {}).await.unwrap();
    assert_eq!(done.restored, 2);
    assert_eq!(dst.status(&with).await.unwrap().headers["tenant"], "7");
    assert!(dst.status(&without).await.unwrap().headers.is_empty());
}
