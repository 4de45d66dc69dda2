//! `schedctl` end to end: tasks seeded with `scheduler::Client` (and, for running and dead tasks,
//! the store's scripts, no worker needed) in a throwaway Redis; the CLI run as a subprocess; its
//! text and `--json` output checked.
//!
//! The seed, in namespace `cli`:
//! - queue `emails` (4 shards): `later` due in 30 s, `overdue` scheduled and already due (nobody
//!   promotes it: there is no worker), `now-1` and `now-2` ready;
//! - queue `billing` (4 shards): two dead tasks on different shards, `busy` running, with a
//!   progress report (40 %).

use std::process::{Command, Output};
use std::time::Duration;

use scheduler::{Client, ClientConfig, TaskId, TaskRequest};
use scheduler_testkit::RedisServer;
use serde_json::{json, Value};

const NS: &str = "cli";
const ERROR: &str = "card declined: insufficient funds";

/// A throwaway Redis with the seed above.
struct Fx {
    server: RedisServer,
    client: Client,
    /// The dead tasks, in order of death (oldest first), on different shards.
    dead: [TaskId; 2],
}

/// Two ids of `billing` on different shards of 4.
fn ids_on_two_shards() -> [String; 2] {
    let first = "doomed-0".to_owned();
    let s0 = TaskId::new("billing", &first).shard(4);
    let second = (1..)
        .map(|i| format!("doomed-{i}"))
        .find(|id| TaskId::new("billing", id).shard(4) != s0)
        .expect("some id lands on another shard");
    [first, second]
}

fn req(queue: &str, id: &str, args: &(u64, &str)) -> TaskRequest {
    TaskRequest::new("send_reminder", queue, args)
        .unwrap()
        .id(id)
        .max_retries(2)
}

async fn seeded() -> Fx {
    let server = RedisServer::start();
    let config = ClientConfig::new(server.url())
        .namespace(NS)
        .queue_shards("emails", 4)
        .queue_shards("billing", 4);
    let client = Client::with_config(config).await.unwrap();

    client
        .enqueue_request(
            req("emails", "later", &(7, "hello"))
                .countdown(Duration::from_secs(30))
                .header("tenant", "42"),
        )
        .await
        .unwrap();
    client
        .enqueue_request(
            req("emails", "overdue", &(8, "late")).countdown(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    for id in ["now-1", "now-2"] {
        client
            .enqueue_request(req("emails", id, &(1, "now")))
            .await
            .unwrap();
    }

    // Dead without a worker: claim, then report a failure that is not retried.
    let store = client.store();
    let ids = ids_on_two_shards();
    for id in &ids {
        let tid = client
            .enqueue_request(req("billing", id, &(99, "charge")))
            .await
            .unwrap();
        let p = store.partition("billing", tid.shard(4));
        let claim = store.claim(&p, 10, 30_000, "w1").await.unwrap();
        assert_eq!(claim.tasks.len(), 1, "only {id} is ready in its shard");
        store
            .retry(&p, &[(id.as_str(), claim.tasks[0].token, ERROR, None)])
            .await
            .unwrap();
        // Distinct times of death, so "newest first" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Running: claimed by a worker that is still at it.
    let busy = client
        .enqueue_request(req("billing", "busy", &(5, "slow")))
        .await
        .unwrap();
    let p = store.partition("billing", busy.shard(4));
    let claim = store.claim(&p, 10, 60_000, "w1").await.unwrap();
    assert_eq!(claim.tasks.len(), 1);
    // Its handler reported its progress (`ctx.progress`).
    store
        .progress(&p, "busy", claim.tasks[0].token, 40, "8000 of 20000 rows")
        .await
        .unwrap();
    // Let `overdue` come due.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Fx {
        server,
        client,
        dead: ids.map(|id| TaskId::new("billing", id)),
    }
}

/// Runs `schedctl` against `url` in namespace [`NS`], whatever the environment says.
fn run_at(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_schedctl"))
        .env_remove("REDIS_URL")
        .env_remove("SCHED_NAMESPACE")
        .args(["--redis-url", url, "--namespace", NS])
        .args(args)
        .output()
        .expect("run schedctl")
}

impl Fx {
    fn run(&self, args: &[&str]) -> Output {
        run_at(&self.server.url(), args)
    }

    /// Runs and expects success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "schedctl {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs with `--json` and expects success; its stdout parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Runs and expects exit status 1; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        expect_failure(self.run(args), args)
    }
}

fn expect_failure(out: Output, args: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "schedctl {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("UTF-8 errors")
}

/// The whitespace-separated cells of the first line of `text` whose first cell is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

/// The value of `key` in `key  value` output.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no field {key:?} in:\n{text}"))
}

/// `queues` lists every queue with its shards and counts, and due-now counts scheduled tasks
/// already due by the Redis clock.
#[tokio::test]
async fn queues_counts() {
    let fx = seeded().await;
    let text = fx.ok(&["queues"]);
    assert_eq!(
        row(&text, "QUEUE"),
        [
            "QUEUE",
            "SHARDS",
            "SCHEDULED",
            "READY",
            "RUNNING",
            "DEAD",
            "DUE",
            "NOW",
            "PAUSED"
        ]
    );
    assert_eq!(
        row(&text, "billing"),
        ["billing", "4", "0", "0", "1", "2", "0", "no"]
    );
    assert_eq!(
        row(&text, "emails"),
        ["emails", "4", "2", "2", "0", "0", "1", "no"]
    );

    let v = fx.json(&["queues"]);
    assert!(v["server_now_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        v["queues"],
        json!([
            {"queue": "billing", "shards": 4, "scheduled": 0, "ready": 0, "running": 1,
             "dead": 2, "due_now": 0, "paused": false, "paused_at_ms": null},
            {"queue": "emails", "shards": 4, "scheduled": 2, "ready": 2, "running": 0,
             "dead": 0, "due_now": 1, "paused": false, "paused_at_ms": null},
        ])
    );
}

/// `pause` and `resume` write `<ns>:paused` (what redis-cli shows), `queues` shows the pause,
/// doing either twice says so, and an unknown queue is an error.
#[tokio::test]
async fn pause_and_resume() {
    let fx = seeded().await;
    assert_eq!(
        fx.ok(&["pause", "emails"]),
        "paused emails: workers stop claiming its tasks within a second\n"
    );
    assert_eq!(fx.ok(&["pause", "emails"]), "emails was paused already\n");
    let text = fx.ok(&["queues"]);
    let r = row(&text, "emails");
    assert_eq!(r[7], "since", "{text}");
    assert_eq!(row(&text, "billing")[7], "no");
    let v = fx.json(&["queues"]);
    assert_eq!(v["queues"][1]["paused"], json!(true));
    let at = v["queues"][1]["paused_at_ms"].as_i64().unwrap();
    assert!(at > 1_700_000_000_000);
    let by_cli = fx
        .server
        .cmd(&["HGET", &format!("{NS}:paused"), "emails"])
        .unwrap();
    assert_eq!(
        by_cli,
        redis::Value::BulkString(at.to_string().into_bytes())
    );
    assert_eq!(
        fx.json(&["resume", "emails"]),
        json!({"queue": "emails", "paused": false, "changed": true})
    );
    assert_eq!(fx.ok(&["resume", "emails"]), "emails was not paused\n");
    assert_eq!(fx.json(&["queues"])["queues"][1]["paused"], json!(false));
    let err = fx.fails(&["pause", "nowhere"]);
    assert!(err.contains("nowhere"), "{err}");
}

/// `limits set|ls|rm` write `<ns>:limits` (what redis-cli shows), list them, remove them, and
/// refuse a limit of 0 and an unknown scope with a clear error.
#[tokio::test]
async fn limits_set_ls_rm() {
    let fx = seeded().await;
    assert_eq!(fx.ok(&["limits", "ls"]), "no limits\n");
    assert_eq!(
        fx.ok(&["limits", "set", "key:tenant", "--concurrency", "5"]),
        "key:tenant: at most 5 at once\n"
    );
    assert_eq!(
        fx.json(&[
            "limits",
            "set",
            "task:charge",
            "--rate",
            "100",
            "--per",
            "1s"
        ]),
        json!({"scope": "task:charge", "limit": "rate=100/1000", "new": true})
    );
    let by_cli = fx
        .server
        .cmd(&["HGET", &format!("{NS}:limits"), "key:tenant"])
        .unwrap();
    assert_eq!(by_cli, redis::Value::BulkString(b"concurrency=5".to_vec()));
    let v = fx.json(&["limits", "ls"]);
    assert_eq!(v["limits"][0]["scope"], json!("task:charge"));
    assert_eq!(v["limits"][0]["rate"], json!(100));
    assert_eq!(v["limits"][1]["concurrency"], json!(5));
    assert_eq!(
        fx.ok(&["limits", "rm", "key:tenant"]),
        "removed the limit of key:tenant\n"
    );
    assert_eq!(
        fx.ok(&["limits", "rm", "key:tenant"]),
        "key:tenant had no limit\n"
    );
    let err = fx.fails(&["limits", "set", "key:tenant", "--concurrency", "0"]);
    assert!(err.contains("invalid limit"), "{err}");
    let err = fx.fails(&["limits", "set", "tenant", "--concurrency", "1"]);
    assert!(err.contains("not a scope"), "{err}");
}

/// Set once the test has read what it wanted: the `hold` tasks then finish.
static HOLD_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs until the test sets [`HOLD_RELEASED`] (at most 60 s).
#[scheduler::task(name = "hold", queue = "lq")]
async fn hold(_ctx: scheduler::TaskContext, _n: u32) -> Result<(), scheduler::TaskError> {
    let start = std::time::Instant::now();
    while !HOLD_RELEASED.load(std::sync::atomic::Ordering::SeqCst)
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `limits ls` shows what each task limit holds now, read from a real worker the limit holds
/// back (runs holding a slot, tasks waiting for one, starts in the rate window), and a keyed
/// limit's budget with `--key <family>=<key>`; a malformed `--key` or a family without a limit
/// is a clear error.
#[tokio::test]
async fn limits_ls_shows_usage() {
    const CONCURRENCY: u64 = 2;
    const TASKS: u64 = CONCURRENCY + 1;
    let fx = seeded().await;
    let conc = CONCURRENCY.to_string();
    fx.ok(&[
        "limits",
        "set",
        "task:hold",
        "--concurrency",
        &conc,
        "--rate",
        "100",
        "--per",
        "1m",
    ]);
    fx.ok(&["limits", "set", "key:tenant", "--concurrency", "5"]);
    let worker = scheduler_testkit::Running::start(
        scheduler::Worker::builder()
            .redis_url(fx.server.url())
            .namespace(NS)
            .register(hold)
            .queues(["lq"]),
    )
    .await;
    for n in 0..TASKS as u32 {
        scheduler::TaskCall::<hold>::new((n,))
            .limit_key("tenant", "acme")
            .send(&fx.client)
            .await
            .unwrap();
    }
    let start = std::time::Instant::now();
    let v = loop {
        let v = fx.json(&["limits", "ls"]);
        if v["limits"][0]["running"] == json!(CONCURRENCY)
            && v["limits"][0]["waiting"] == json!(TASKS - CONCURRENCY)
        {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Sorted by scope: task limits, then queue limits, then keyed ones.
    assert_eq!(v["limits"][0]["scope"], json!("task:hold"));
    // The waiting task has not started: the window holds the running ones.
    assert_eq!(v["limits"][0]["started"], json!(CONCURRENCY));
    assert_eq!(v["limits"][1]["scope"], json!("key:tenant"));
    assert_eq!(v["limits"][1]["running"], Value::Null);
    let text = fx.ok(&["limits", "ls"]);
    let hold_row = row(&text, "task:hold");
    let want = [CONCURRENCY, TASKS - CONCURRENCY, CONCURRENCY].map(|n| n.to_string());
    assert_eq!(hold_row[hold_row.len() - 3..], want, "{text}");
    assert!(row(&text, "key:tenant").contains(&"key"), "{text}");
    assert!(text.contains("--key <family>=<key>"), "{text}");
    // One key's budget: the running tasks hold it; a task of a budget it never reached (the
    // waiting one) does not.
    let text = fx.ok(&["limits", "ls", "--key", "tenant=acme"]);
    let acme = row(&text, "key:tenant=acme");
    assert_eq!(acme[acme.len() - 3..], [conc.as_str(), "0", "-"], "{text}");
    let v = fx.json(&["limits", "ls", "--key", "tenant=acme"]);
    assert_eq!(v["keys"][0]["budget"], json!("key:tenant=acme"));
    assert_eq!(v["keys"][0]["running"], json!(CONCURRENCY));
    let err = fx.fails(&["limits", "ls", "--key", "tenant"]);
    assert!(err.contains("<family>=<key>"), "{err}");
    let err = fx.fails(&["limits", "ls", "--key", "region=eu"]);
    assert!(err.contains("key:region has no limit"), "{err}");
    HOLD_RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
    worker.stop().await;
}

/// `status` shows every field, times as ISO-8601 UTC with a relative part, and the arguments
/// and headers decoded from MessagePack; `--json` gives the same as typed values.
#[tokio::test]
async fn status_fields() {
    let fx = seeded().await;
    let text = fx.ok(&["status", "emails/later"]);
    assert_eq!(field(&text, "task"), "emails/later");
    assert_eq!(field(&text, "name"), "send_reminder");
    assert_eq!(field(&text, "state"), "scheduled");
    assert_eq!(field(&text, "attempts"), "0");
    assert_eq!(field(&text, "max_retries"), "2");
    assert_eq!(field(&text, "timeout_ms"), "30000 (30 s)");
    assert_eq!(field(&text, "args"), r#"[7, "hello"]"#);
    assert_eq!(field(&text, "headers"), r#"{"tenant": "42"}"#);
    let run_at = field(&text, "run_at");
    assert!(
        run_at.ends_with("Z (in 29 s)") || run_at.ends_with("Z (in 30 s)"),
        "run_at {run_at}"
    );
    assert!(field(&text, "enqueued_at").ends_with("Z (now)"), "{text}");

    let v = fx.json(&["status", "emails/later"]);
    assert_eq!(v["id"], "emails/later");
    assert_eq!(v["state"], "scheduled");
    assert_eq!(v["attempts"], 0);
    assert_eq!(v["priority"], 0);
    assert_eq!(v["args"], json!([7, "hello"]));
    assert_eq!(v["headers"], json!({"tenant": "42"}));
    let (run_at, enq) = (
        v["run_at_ms"].as_i64().unwrap(),
        v["enqueued_at_ms"].as_i64().unwrap(),
    );
    assert_eq!(run_at - enq, 30_000);
    let iso = v["run_at"].as_str().unwrap();
    assert!(
        iso.len() == 24 && iso.ends_with('Z') && iso.as_bytes()[10] == b'T',
        "{iso}"
    );
    assert_eq!(v["lease_deadline"], Value::Null);

    // A dead task: its error and time of death; a running one: worker and lease deadline.
    let text = fx.ok(&["status", &fx.dead[0].to_string()]);
    assert_eq!(field(&text, "state"), "dead");
    assert_eq!(field(&text, "error"), ERROR);
    assert_eq!(field(&text, "attempts"), "1");
    assert!(field(&text, "finished_at").ends_with(" ago)") || text.contains("(now)"));
    let v = fx.json(&["status", "billing/busy"]);
    assert_eq!(
        (&v["state"], &v["worker"]),
        (&json!("running"), &json!("w1"))
    );
    let lease = v["lease_deadline_ms"].as_i64().unwrap();
    assert!((59_000..=60_000).contains(&(lease - v["server_now_ms"].as_i64().unwrap())));
    // Its progress report: percent, message, when, by which run.
    assert_eq!(
        (&v["progress"], &v["progress_msg"], &v["progress_attempt"]),
        (&json!(40), &json!("8000 of 20000 rows"), &json!(1))
    );
    assert!(v["progress_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let text = fx.ok(&["status", "billing/busy"]);
    assert_eq!(field(&text, "progress"), "40%");
    assert_eq!(field(&text, "progress_msg"), "8000 of 20000 rows");
    assert!(field(&text, "progress_at").ends_with("Z (now)"), "{text}");

    // Unknown ids and queues, and malformed ids, are plain errors.
    let err = fx.fails(&["status", "emails/nope"]);
    assert!(err.contains("task emails/nope not found"), "{err}");
    let err = fx.fails(&["status", "nosuchqueue/x"]);
    assert!(err.contains("unknown queue \"nosuchqueue\""), "{err}");
    assert!(err.contains("billing, emails"), "{err}");
    // Without a `/` it names a workflow; the error says how to name a task.
    let err = fx.fails(&["status", "just-an-id"]);
    assert!(err.contains("a task is named <queue>/<id>"), "{err}");
}

/// `stats` sums counts and lifetime counters over the shards; `--shards` adds one row each.
#[tokio::test]
async fn stats_counts_and_counters() {
    let fx = seeded().await;
    let v = fx.json(&["stats", "billing", "--shards"]);
    assert_eq!(
        (
            &v["shards"],
            &v["scheduled"],
            &v["ready"],
            &v["running"],
            &v["dead"]
        ),
        (&json!(4), &json!(0), &json!(0), &json!(1), &json!(2))
    );
    assert_eq!(v["counters"]["enqueued"], 3);
    assert_eq!(v["counters"]["dead"], 2);
    assert_eq!(v["counters"]["succeeded"], 0);
    let per = v["per_shard"].as_array().unwrap();
    assert_eq!(per.len(), 4);
    let dead: u64 = per.iter().map(|s| s["dead"].as_u64().unwrap()).sum();
    let enq: u64 = per
        .iter()
        .map(|s| s["counters"]["enqueued"].as_u64().unwrap())
        .sum();
    assert_eq!((dead, enq), (2, 3));

    let text = fx.ok(&["stats", "emails", "--shards"]);
    assert_eq!(field(&text, "queue"), "emails (4 shards)");
    assert_eq!(field(&text, "scheduled"), "2");
    assert_eq!(field(&text, "due now"), "1");
    assert_eq!(field(&text, "  enqueued"), "4");
    assert_eq!(row(&text, "SHARD").len(), 15, "{text}");
    for shard in ["0", "1", "2", "3"] {
        assert_eq!(row(&text, shard).len(), 14, "{text}");
    }
}

/// `dead` lists the newest dead tasks across shards with name, attempts, time and error.
#[tokio::test]
async fn dead_listing() {
    let fx = seeded().await;
    let text = fx.ok(&["dead", "billing"]);
    assert!(
        text.starts_with("2 dead tasks in billing, newest first\n"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("ID"), "{text}");
    // Newest first.
    assert!(lines[2].starts_with(&fx.dead[1].to_string()), "{text}");
    assert!(lines[3].starts_with(&fx.dead[0].to_string()), "{text}");
    for l in &lines[2..] {
        assert!(l.contains(" send_reminder ") && l.ends_with(ERROR), "{l}");
    }

    let v = fx.json(&["dead", "billing", "--limit", "1"]);
    assert_eq!(v["total"], 2);
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], fx.dead[1].to_string());
    assert_eq!(tasks[0]["attempts"], 1);
    assert_eq!(tasks[0]["error"], ERROR);
    assert!(tasks[0]["died_at"].as_str().unwrap().ends_with('Z'));

    let text = fx.ok(&["dead", "billing", "--limit", "1"]);
    assert!(
        text.starts_with("2 dead tasks in billing, the newest 1 shown\n"),
        "{text}"
    );
    assert_eq!(fx.ok(&["dead", "emails"]), "no dead tasks in emails\n");
}

/// `requeue` puts a dead task back in the ready set with attempts 0 and its error kept; a task
/// that is not dead is refused; `--all-dead` takes the rest.
#[tokio::test]
async fn requeue_dead_tasks() {
    let fx = seeded().await;
    let first = fx.dead[0].to_string();
    let out = fx.ok(&["requeue", &first]);
    assert_eq!(
        out,
        format!("requeued {first}: ready, attempts reset to 0\n")
    );
    let v = fx.json(&["status", &first]);
    assert_eq!((&v["state"], &v["attempts"]), (&json!("ready"), &json!(0)));
    assert_eq!(v["error"], ERROR);
    assert_eq!(v["finished_at"], Value::Null);
    let q = fx.json(&["queues"]);
    assert_eq!(
        (&q["queues"][0]["ready"], &q["queues"][0]["dead"]),
        (&json!(1), &json!(1))
    );

    let err = fx.fails(&["requeue", &first]);
    assert!(
        err.contains(&format!("task {first} is ready, not dead: nothing changed")),
        "{err}"
    );
    let err = fx.fails(&["requeue", "billing/ghost"]);
    assert!(err.contains("task billing/ghost not found"), "{err}");
    let err = fx.fails(&["requeue", "billing"]);
    assert!(err.contains("--all-dead"), "{err}");

    let v = fx.json(&["requeue", "billing", "--all-dead"]);
    assert_eq!(
        v,
        json!({"queue": "billing", "requeued": 1, "not_dead": 0, "not_found": 0})
    );
    let v = fx.json(&["status", &fx.dead[1].to_string()]);
    assert_eq!((&v["state"], &v["attempts"]), (&json!("ready"), &json!(0)));
    assert_eq!(fx.ok(&["dead", "billing"]), "no dead tasks in billing\n");
    let stats = fx.client.queue_stats("billing").await.unwrap();
    assert_eq!((stats.ready, stats.dead), (2, 0));
    assert_eq!(stats.counters["requeued"], 2);
    assert_eq!(
        fx.ok(&["requeue", "billing", "--all-dead", "--limit", "5"]),
        "requeued 0 dead tasks of billing: ready, attempts reset to 0\n"
    );
}

/// `--all-dead --limit N` takes the newest N across shards.
#[tokio::test]
async fn requeue_all_dead_with_limit() {
    let fx = seeded().await;
    let out = fx.ok(&["requeue", "billing", "--all-dead", "--limit", "1"]);
    assert_eq!(
        out,
        "requeued 1 dead task of billing: ready, attempts reset to 0\n"
    );
    assert_eq!(
        fx.json(&["status", &fx.dead[1].to_string()])["state"],
        "ready"
    );
    assert_eq!(
        fx.json(&["status", &fx.dead[0].to_string()])["state"],
        "dead"
    );
}

/// `cancel` withdraws a task that has not started and refuses a running or finished one.
#[tokio::test]
async fn cancel_tasks() {
    let fx = seeded().await;
    assert_eq!(
        fx.ok(&["cancel", "emails/later"]),
        "cancelled emails/later\n"
    );
    let text = fx.ok(&["status", "emails/later"]);
    assert_eq!(field(&text, "state"), "cancelled");
    assert!(field(&text, "expires").contains("(in 59 min)"), "{text}");
    let err = fx.fails(&["cancel", "emails/later"]);
    assert!(err.contains("already finished"), "{err}");
    assert_eq!(
        fx.ok(&["cancel", "billing/busy"]),
        "cancellation of running task billing/busy requested: its worker stops it\n"
    );
    let busy = fx.server.cmd(&[
        "HGET",
        &format!(
            "{NS}:{{billing:{}}}:t:busy",
            TaskId::new("billing", "busy").shard(4)
        ),
        "cancel",
    ]);
    assert!(matches!(busy, Ok(redis::Value::BulkString(_))), "{busy:?}");
    let v = fx.json(&["cancel", "emails/now-1"]);
    assert_eq!(v, json!({"id": "emails/now-1", "cancelled": true}));
    let q = fx.json(&["queues"]);
    assert_eq!(
        (&q["queues"][1]["scheduled"], &q["queues"][1]["ready"]),
        (&json!(1), &json!(1))
    );
}

/// `workers` reads the heartbeat hashes found through the worker index, not other keys: an index
/// entry without its hash (a stopped worker) and another namespace's worker are not listed.
#[tokio::test]
async fn workers_from_heartbeats() {
    let fx = seeded().await;
    assert_eq!(
        fx.ok(&["workers"]),
        "no live workers (none in the worker index cli:workers)\n"
    );
    let mut conn = fx.server.conn();
    let started = {
        let (s, _): (i64, i64) = redis::cmd("TIME").query(&mut conn).unwrap();
        s * 1000 - 180_000
    };
    let _: () = redis::pipe()
        .hset_multiple(
            "cli:workers:vm:4242:beef",
            &[
                ("pid", "4242"),
                ("queues", "emails,billing"),
                ("concurrency", "64"),
                ("running", "3"),
                ("succeeded", "120"),
                ("failed", "7"),
                ("started_at", &started.to_string()),
            ],
        )
        .pexpire("cli:workers:vm:4242:beef", 15_000)
        .zadd("cli:workers", "vm:4242:beef", started)
        // A stopped worker: its index entry outlived its hash.
        .zadd("cli:workers", "vm:9:dead", started)
        // Another namespace's worker is not ours.
        .hset("other:workers:vm:1:aaaa", "pid", "1")
        .zadd("other:workers", "vm:1:aaaa", started)
        .query(&mut conn)
        .unwrap();

    let text = fx.ok(&["workers"]);
    assert_eq!(
        row(&text, "vm:4242:beef")[..7],
        [
            "vm:4242:beef",
            "4242",
            "emails,billing",
            "64",
            "3",
            "120",
            "7"
        ]
    );
    assert!(text.contains("(3 min ago)"), "{text}");
    assert!(!text.contains("vm:1:aaaa"), "{text}");
    assert!(!text.contains("vm:9:dead"), "{text}");

    let v = fx.json(&["workers"]);
    let w = &v["workers"][0];
    assert_eq!(v["workers"].as_array().unwrap().len(), 1);
    assert_eq!(w["id"], "vm:4242:beef");
    assert_eq!(w["pid"], 4242);
    assert_eq!(w["queues"], json!(["emails", "billing"]));
    assert_eq!(
        (
            &w["concurrency"],
            &w["running"],
            &w["succeeded"],
            &w["failed"]
        ),
        (&json!(64), &json!(3), &json!(120), &json!(7))
    );
    assert_eq!(w["started_at_ms"], started);
    assert!((1..=15_000).contains(&w["ttl_ms"].as_i64().unwrap()));
}

/// `due` counts scheduled tasks due now (not promoted) and within the window, by the Redis clock.
#[tokio::test]
async fn due_counts() {
    let fx = seeded().await;
    let v = fx.json(&["due", "emails", "--within", "60s"]);
    assert_eq!(
        (
            &v["due_now"],
            &v["due_within"],
            &v["ready"],
            &v["window_ms"]
        ),
        (&json!(1), &json!(1), &json!(2), &json!(60_000))
    );
    let next = v["next_due_ms"].as_i64().unwrap();
    assert!(
        next <= v["server_now_ms"].as_i64().unwrap(),
        "the overdue task is next"
    );

    let v = fx.json(&["due", "emails", "--within", "10s"]);
    assert_eq!((&v["due_now"], &v["due_within"]), (&json!(1), &json!(0)));

    let text = fx.ok(&["due", "emails", "--within", "2m"]);
    assert_eq!(field(&text, "due within 2 min"), "1");
    assert!(field(&text, "due now").starts_with("1 "), "{text}");

    let out = fx.run(&["due", "emails", "--within", "soon"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

/// Wrong URL, Redis down, unknown queue: a plain message on stderr and exit status 1, and a
/// password in the URL is never echoed.
#[tokio::test]
async fn errors_are_plain() {
    let err = expect_failure(run_at("nonsense://x", &["queues"]), &["queues"]);
    assert!(err.starts_with("schedctl: invalid Redis URL"), "{err}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let err = expect_failure(run_at(&url, &["queues"]), &["queues"]);
    assert!(
        err.starts_with(&format!(
            "schedctl: cannot connect to Redis at redis://user:***@127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    let fx = seeded().await;
    let err = fx.fails(&["dead", "nope"]);
    assert!(err.contains("unknown queue \"nope\""), "{err}");
    let err = fx.fails(&["stats", "bad{queue}"]);
    assert!(err.contains("invalid queue name"), "{err}");
    // Looking did not register anything.
    let q = fx.json(&["queues"]);
    assert_eq!(q["queues"].as_array().unwrap().len(), 2);
}

/// `schedules add|ls|pause|resume|trigger|rm` manage periodic schedules through
/// `scheduler::Schedules`; a bad cron expression is refused with exit status 1 and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_add_ls_pause_trigger_rm() {
    let server = RedisServer::start();
    let url = server.url();
    let ok = |args: &[&str]| {
        let out = run_at(&url, args);
        assert!(
            out.status.success(),
            "schedctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = ok(&[
        "schedules",
        "add",
        "nightly",
        "--cron",
        "0 30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--task",
        "report",
        "--queue",
        "billing",
        "--args",
        "[7, \"eu\"]",
        "--misfire",
        "once",
    ]);
    assert_eq!(out, "nightly: created\n");
    let again = ok(&[
        "schedules",
        "add",
        "nightly",
        "--cron",
        "0 30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--task",
        "report",
        "--queue",
        "billing",
        "--args",
        "[7, \"eu\"]",
        "--misfire",
        "once",
    ]);
    assert_eq!(again, "nightly: unchanged\n");
    let ls = ok(&["schedules", "ls"]);
    assert!(
        ls.contains("nightly") && ls.contains("cron 0 30 2 * * * (Europe/Paris)"),
        "{ls}"
    );
    assert!(ls.contains("[7, \"eu\"]") && ls.contains("active"), "{ls}");
    assert_eq!(ok(&["schedules", "pause", "nightly"]), "paused nightly\n");
    let v: Value = serde_json::from_str(&ok(&["--json", "schedules", "ls"])).unwrap();
    assert_eq!(v["schedules"][0]["paused"], json!(true));
    assert_eq!(v["schedules"][0]["args"], json!([7, "eu"]));
    assert_eq!(ok(&["schedules", "resume", "nightly"]), "resumed nightly\n");
    assert!(ok(&["schedules", "trigger", "nightly"]).starts_with("enqueued billing/nightly@now-"));
    let bad = run_at(
        &url,
        &[
            "schedules",
            "add",
            "bad",
            "--cron",
            "0 61 * * * *",
            "--task",
            "report",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid schedule"));
    assert_eq!(ok(&["schedules", "rm", "nightly"]), "removed nightly\n");
    assert!(ok(&["schedules", "ls"]).starts_with("no schedules"));
}

/// `export` writes the seed's 7 tasks (the running one as ready) to a file; after `FLUSHALL`,
/// `import` restores them (dead ones with their error), a second `import` skips them all, and a
/// truncated file is refused with nothing imported.
#[tokio::test]
async fn export_flushall_import() {
    let fx = seeded().await;
    let dir = fx.server.dir().to_path_buf();
    let file = dir.join("backup.schedexp");
    let path = file.to_str().unwrap();
    let out = fx.json(&["export", "--out", path, "--batch", "2"]);
    assert_eq!(out["tasks"], 7);
    assert_eq!(
        out["by_state"],
        json!({"dead": 2, "ready": 3, "scheduled": 2})
    );
    assert!(!dir.join("backup.schedexp.partial").exists());
    fx.server.cmd(&["FLUSHALL"]).unwrap();
    let text = fx.ok(&["import", path]);
    assert_eq!(
        text,
        format!("imported {path}: 7 tasks restored, 0 already there; 0 schedules added, 0 already there\n")
    );
    let again = fx.json(&["import", path]);
    assert_eq!(
        (again["restored"].clone(), again["existed"].clone()),
        (json!(0), json!(7))
    );
    let dead = fx.client.status(&fx.dead[0]).await.unwrap();
    assert_eq!(dead.last_error.as_deref(), Some(ERROR));
    let counts = fx.json(&["queues"]);
    let billing = counts["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "billing")
        .unwrap()
        .clone();
    assert_eq!(
        (billing["ready"].clone(), billing["dead"].clone()),
        (json!(1), json!(2))
    );

    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.schedexp");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let err = fx.fails(&["import", cut.to_str().unwrap()]);
    assert!(err.contains("truncated at byte"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
}

/// `ls` pages through a state with `--cursor`, printing the command for the next page, and
/// `--json` gives the same page; running tasks show their worker and start; a page past the end
/// and an unlisted state fail plainly.
#[tokio::test]
async fn ls_pages_through_a_state() {
    let fx = seeded().await;
    let first = fx.json(&["ls", "emails", "ready", "--limit", "1"]);
    assert_eq!(first["total"], 2);
    assert_eq!(first["tasks"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().expect("a next page").to_owned();
    let text = fx.ok(&["ls", "emails", "ready", "--limit", "1"]);
    assert!(text.contains(&format!(
        "schedctl ls emails ready --cursor {next} --limit 1"
    )));
    let second = fx.json(&["ls", "emails", "ready", "--limit", "1", "--cursor", &next]);
    let mut ids = vec![
        first["tasks"][0]["id"].as_str().unwrap().to_owned(),
        second["tasks"][0]["id"].as_str().unwrap().to_owned(),
    ];
    ids.sort();
    assert_eq!(ids, ["emails/now-1", "emails/now-2"]);
    assert!(second["next"].is_null());
    let dead = fx.ok(&["ls", "billing", "dead"]);
    assert!(dead.contains(ERROR) && dead.contains("DIED"), "{dead}");
    // Running: the worker holding the lease and when the run started.
    let running = fx.ok(&["ls", "billing", "running"]);
    assert!(
        running.contains("WORKER") && running.contains("STARTED") && running.contains("w1"),
        "{running}"
    );
    let running = fx.json(&["ls", "billing", "running"]);
    assert_eq!(running["tasks"][0]["worker"], "w1");
    assert!(running["tasks"][0]["started_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(fx
        .fails(&["ls", "emails", "ready", "--cursor", "9:0"])
        .contains("past the end"));
    assert!(fx
        .fails(&["ls", "emails", "succeeded"])
        .contains("not listed"));
    assert!(fx.fails(&["ls", "nope", "ready"]).contains("unknown queue"));
}

/// `delete` removes a task that is not running and refuses a running one.
#[tokio::test]
async fn delete_tasks() {
    let fx = seeded().await;
    assert_eq!(fx.ok(&["delete", "emails/later"]), "deleted emails/later\n");
    assert!(fx.fails(&["status", "emails/later"]).contains("not found"));
    assert!(fx.fails(&["delete", "billing/busy"]).contains("running"));
    assert!(fx.fails(&["delete", "emails/later"]).contains("not found"));
}

/// `purge` asks first: without a terminal and without `--yes` it refuses and deletes nothing;
/// with `--yes` it deletes the whole state; running tasks cannot be purged.
#[tokio::test]
async fn purge_a_state() {
    let fx = seeded().await;
    let refused = fx.fails(&["purge", "emails", "ready"]);
    assert!(refused.contains("--yes"), "{refused}");
    assert_eq!(fx.json(&["stats", "emails"])["ready"], 2);
    assert_eq!(
        fx.ok(&["purge", "emails", "ready", "--yes"]),
        "deleted 2 ready tasks of emails\n"
    );
    assert_eq!(fx.json(&["stats", "emails"])["ready"], 0);
    let dead = fx.json(&["purge", "billing", "dead", "--yes"]);
    assert_eq!(dead["deleted"], 2);
    assert!(fx
        .fails(&["purge", "billing", "running", "--yes"])
        .contains("cannot be purged"));
}

/// Starts `schedctl serve` on a free port with `args`; the port and the child (killed on drop).
fn serve(url: &str, args: &[&str]) -> (u16, scheduler_testkit::ChildGuard) {
    let port = scheduler_testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_schedctl"))
        .env_remove("REDIS_URL")
        .env_remove("SCHED_NAMESPACE")
        .args(["--redis-url", url, "--namespace", NS])
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run schedctl serve");
    (port, scheduler_testkit::ChildGuard(child))
}

/// `GET path` on the dashboard at `port` once it listens, with extra header lines `auth`; the
/// whole response.
fn http_get(port: u16, path: &str, auth: &str) -> String {
    use std::io::{Read as _, Write as _};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "serve never listened: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `serve` answers HTTP: 401 without the token, the overview with it; without
/// `--database-url` the history page says it is not configured.
#[tokio::test]
async fn serve_the_dashboard() {
    let fx = seeded().await;
    let (port, _guard) = serve(&fx.server.url(), &["--token", "tok"]);
    assert!(http_get(port, "/api/overview", "").starts_with("HTTP/1.1 401"));
    let ok = http_get(port, "/api/overview", "Authorization: Bearer tok\r\n");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"name\":\"billing\""));
    let h = http_get(port, "/history", "Authorization: Bearer tok\r\n");
    assert!(h.contains("History is not configured"), "{h}");
}

/// `history` reads the history archive in PostgreSQL (a database of its own at 127.0.0.1:5432,
/// dropped after): newest first, filtered by state and id, as a table and as JSON; a bad state and
/// an unreachable database are plain errors, the password hidden. `archive --off` deletes the
/// namespace's archive setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_the_archive() {
    use scheduler::archive::HistoryDb;
    use scheduler::broker::ArchiveEntry;
    let pg = scheduler_testkit::pg::PgDb::create("cli_history");
    let url = pg.url();
    let fx = seeded().await;
    let db = HistoryDb::connect(&url, 1).await.unwrap();
    let p = fx.client.store().partition("billing", 1);
    let entry =
        |id: &str, state: &str, t: i64, error: Option<&str>, result: Vec<u8>| ArchiveEntry {
            entry_id: format!("{t}-0"),
            id: id.to_owned(),
            name: "charge".to_owned(),
            state: state.to_owned(),
            attempt: 1,
            finished_at_ms: t,
            error: error.map(str::to_owned),
            result,
            args: rmp_serde::to_vec(&(7u64,)).unwrap(),
            ..Default::default()
        };
    let entries = [
        entry(
            "paid",
            "succeeded",
            1_764_000_000_000,
            None,
            rmp_serde::to_vec(&"ok").unwrap(),
        ),
        entry(
            "refused",
            "dead",
            1_764_000_001_000,
            Some(ERROR),
            Vec::new(),
        ),
    ];
    assert_eq!(db.insert(NS, &p, &entries).await.unwrap(), 2);

    let text = fx.ok(&["history", "--database-url", &url]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("FINISHED (UTC)"), "{text}");
    assert!(
        lines[1].contains("billing/refused") && lines[1].contains(ERROR),
        "{text}"
    );
    assert!(
        lines[2].contains("billing/paid") && lines[2].contains("\"ok\""),
        "{text}"
    );
    let dead = fx.json(&["history", "--database-url", &url, "--state", "dead"]);
    assert_eq!(dead["rows"].as_array().unwrap().len(), 1);
    assert_eq!(dead["rows"][0]["error"], json!(ERROR));
    assert_eq!(dead["rows"][0]["args"], json!([7]));
    let one = fx.json(&["history", "--database-url", &url, "--id", "paid"]);
    assert_eq!(one["rows"][0]["result"], json!("ok"));
    let recent = fx.json(&["history", "--database-url", &url, "--since", "1h"]);
    assert!(
        recent["rows"].as_array().unwrap().is_empty(),
        "finished in 2025"
    );

    let err = fx.fails(&["history", "--database-url", &url, "--state", "running"]);
    assert!(err.contains("unknown state \"running\""), "{err}");
    let err = fx.fails(&[
        "history",
        "--database-url",
        "postgres://u:hunter2@127.0.0.1:1/x",
    ]);
    assert!(
        err.contains("history archive database") && !err.contains("hunter2"),
        "{err}"
    );

    // `serve --database-url`: the history page lists the archive; a bad URL stops it at start.
    let (port, guard) = serve(&fx.server.url(), &["--database-url", &url]);
    let page = http_get(port, "/history?state=dead", "");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("data-id=\"refused\"") && !page.contains("data-id=\"paid\""),
        "{page}"
    );
    drop(guard);
    let err = fx.fails(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        "postgres://u:hunter2@127.0.0.1:1/x",
    ]);
    assert!(
        err.contains("cannot connect") && !err.contains("hunter2"),
        "{err}"
    );

    fx.client.store().write_archive_setting(500).await.unwrap();
    fx.ok(&["archive", "--off"]);
    assert_eq!(fx.client.store().load_archive_setting().await.unwrap(), 0);
    drop(db);
    drop(pg);
}

/// A task type for the workflow test (no worker runs it).
struct Part;

impl scheduler::Task for Part {
    const NAME: &'static str = "part";
    const QUEUE: &'static str = "emails";
    type Args = (u64,);
    type Output = u64;
    async fn run(_: scheduler::TaskContext, (n,): (u64,)) -> Result<u64, scheduler::TaskError> {
        Ok(n)
    }
}

/// A task type for the workflow test's callback.
struct Total;

impl scheduler::Task for Total {
    const NAME: &'static str = "total";
    const QUEUE: &'static str = "emails";
    type Args = (Vec<u64>,);
    type Output = u64;
    async fn run(
        _: scheduler::TaskContext,
        (v,): (Vec<u64>,),
    ) -> Result<u64, scheduler::TaskError> {
        Ok(v.iter().sum())
    }
}

/// `status <workflow id>` shows the workflow and each member's task state: the callback
/// `held`; once a member failed (recorded as a worker would), the workflow `failed` with its
/// error and the rest `cancelled`. An unknown workflow is an error.
#[tokio::test]
async fn status_of_a_workflow() {
    use scheduler::workflow::{chord, group, Partial};
    use scheduler::Task as _;
    let fx = seeded().await;
    let wf = chord(
        group([1, 2].map(|n| Part::call((n,)))),
        Partial::<Total, _>::new(()),
    )
    .build()
    .unwrap()
    .id("wf1");
    fx.client.start_workflow(wf).await.unwrap();
    let text = fx.ok(&["status", "wf1"]);
    println!("{text}");
    assert_eq!(field(&text, "kind"), "chord");
    assert_eq!(field(&text, "state"), "running");
    assert_eq!(row(&text, "1")[2..4], ["emails/wf1.1.0", "held"]);

    fx.client
        .workflow_member_finished("wf1:0:0", Err("card declined"))
        .await
        .unwrap();
    let text = fx.ok(&["status", "wf1"]);
    println!("{text}");
    assert_eq!(field(&text, "state"), "failed");
    assert!(field(&text, "error").contains("card declined"), "{text}");
    let v = fx.json(&["status", "wf1"]);
    let states: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["task_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ready", "cancelled", "cancelled"]);
    assert_eq!(v["members"][0]["outcome"], "err");
    assert!(fx.fails(&["status", "nope"]).contains("not found"));
}

/// `events --on` turns a queue's task events on; `events <queue> --count 2 --json` prints the
/// next two events (tasks enqueued until it has them: it subscribes at a moment the test cannot
/// see), one JSON object a line; `--off` turns them off.
#[tokio::test]
async fn events_follows_a_queue_live() {
    let fx = seeded().await;
    assert_eq!(
        fx.json(&["events", "emails", "--on"]),
        json!({ "queue": "emails", "events": "on" })
    );
    let client = Client::with_config(ClientConfig::new(fx.server.url()).namespace(NS))
        .await
        .unwrap();
    assert!(client.store().events_on("emails"));
    let mut child = scheduler_testkit::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_schedctl"))
            .env_remove("REDIS_URL")
            .env_remove("SCHED_NAMESPACE")
            .args(["--redis-url", &fx.server.url(), "--namespace", NS])
            .args(["--json", "events", "emails", "--count", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run schedctl events"),
    );
    let mut n = 0;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(n < 300, "schedctl events did not get 2 events in 30 s");
        client
            .enqueue_request(
                req("emails", &format!("ev-{n}"), &(1, "x")).countdown(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert_eq!(l["kind"], "enqueued");
        assert_eq!(l["queue"], "emails");
        assert!(l["id"].as_str().unwrap().starts_with("ev-"));
    }
    assert_eq!(
        fx.json(&["events", "emails", "--off"]),
        json!({ "queue": "emails", "events": "off" })
    );
}
