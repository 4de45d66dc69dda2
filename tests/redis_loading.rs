//! Redis answering `LOADING` after a restart (loading a large data set): the client keeps
//! retrying for its loading wait (`ClientConfig::loading_wait`, default 30 s) instead of failing
//! after its few ordinary retry attempts, and gives a typed error when the wait is spent.
//!
//! The load is slowed with Redis's `key-load-delay` setting (1 ms per key, 3,000 keys), so it
//! lasts a few seconds, longer than the ordinary retry budget (2 attempts here).

use std::time::{Duration, Instant};

use scheduler::{Client, ClientConfig, TaskRequest, TaskState};
use scheduler_testkit::RedisServer;

/// A server whose RDB holds 3,000 filler keys and whose restarts load them slowly.
fn slow_loading_server() -> RedisServer {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--key-load-delay",
        "1000",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    let mut c = redis.conn();
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, 3000 do redis.call('SET', 'filler:' .. i, 'x') end return 1")
        .arg(0)
        .query(&mut c)
        .unwrap();
    redis
}

/// Restarts the server and returns once it answers `LOADING`.
fn restart_until_loading(redis: &mut RedisServer) {
    let mut c = redis.conn();
    let _: String = redis::cmd("SAVE").query(&mut c).unwrap();
    redis.restart_nowait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = redis::Client::open(redis.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        match reply {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => {
                return
            }
            Ok(_) => panic!(
                "the restarted server served before it was seen loading; its log:\n{}",
                std::fs::read_to_string(redis.dir().join("redis.log")).unwrap_or_default()
            ),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the server never answered LOADING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request(id: &str) -> TaskRequest {
    TaskRequest::new("noop", "loading", &())
        .unwrap()
        .id(id)
        .countdown(Duration::from_secs(3600))
}

/// An enqueue sent while Redis loads succeeds once it has loaded, with only 2 ordinary retry
/// attempts: `LOADING` is retried within its own wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_waits_out_a_long_load() {
    let mut redis = slow_loading_server();
    let client = Client::with_config(
        ClientConfig::new(redis.url())
            .namespace("ld")
            .retry_attempts(2),
    )
    .await
    .unwrap();
    let before = client.enqueue_request(request("before")).await.unwrap();
    restart_until_loading(&mut redis);
    let after = client
        .enqueue_request(request("during-load"))
        .await
        .expect("enqueue during LOADING is retried until Redis has loaded");
    assert_eq!(
        client.status(&after).await.unwrap().state,
        TaskState::Scheduled
    );
    // The task acknowledged before the restart was saved and reloaded.
    assert_eq!(
        client.status(&before).await.unwrap().state,
        TaskState::Scheduled
    );
}

/// With no loading wait and one attempt, the producer gets the typed error: `is_loading` and
/// `is_transient`, so its own retry loop can key on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_past_the_wait_is_a_typed_error() {
    let mut redis = slow_loading_server();
    let client = Client::with_config(
        ClientConfig::new(redis.url())
            .namespace("ld")
            .retry_attempts(1)
            .loading_wait(Duration::ZERO),
    )
    .await
    .unwrap();
    client.enqueue_request(request("before")).await.unwrap();
    restart_until_loading(&mut redis);
    // The first call may meet the connection the restart broke; the ones after it meet LOADING.
    let mut saw_loading = false;
    for _ in 0..20 {
        match client.enqueue_request(request("during-load")).await {
            Err(e) if e.is_loading() => {
                assert!(e.is_transient(), "{e}");
                assert!(e.to_string().to_lowercase().contains("loading"), "{e}");
                saw_loading = true;
                break;
            }
            Err(e) => assert!(e.is_transient(), "unexpected error {e}"),
            Ok(_) => break,
        }
    }
    assert!(saw_loading, "no typed LOADING error reached the producer");
}
