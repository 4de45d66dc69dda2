//! The dashboard in a real headless Chromium driven through chromedriver (WebDriver, with
//! fantoccini), against a live Redis holding tasks in every state and a real worker:
//! log in (refused without the token), the overview's counts match the Inspector and refresh
//! live, a dead task is requeued from its page and runs, a scheduled task is cancelled, and
//! read-only mode shows no action.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Screenshots of every page are written to `$SCREENSHOTS_DIR` when it
//! is set: `SCREENSHOTS_DIR=docs/img cargo test -p scheduler-dashboard --test browser`
//! regenerates the ones of `docs/dashboard.md`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use scheduler::{task, Inspector, TaskError, TaskRequest, TaskState, Worker};
use scheduler_dashboard::{router, DashboardConfig};
use scheduler_testkit::{free_port, ChildGuard, RedisServer};

use common::{archived, seed, PgDb, NS};

const TOKEN: &str = "browser-t0ken";

/// The handler of the dead tasks once requeued: it succeeds.
#[task(queue = "billing")]
async fn charge(_cents: u64, _what: String) -> Result<(), TaskError> {
    Ok(())
}

/// chromedriver on a free port, killed on drop.
fn chromedriver() -> (ChildGuard, u16) {
    let port = free_port();
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin} ({e}): apt-get install chromium chromium-driver")
        });
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, port)
}

async fn browser(port: u16) -> Browser {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ];
    if std::env::var_os("SCREENSHOTS_DIR").is_some() {
        // Screenshots in the light theme, whatever the machine prefers.
        args.push("--force-prefers-color-scheme=light");
    }
    let mut opts = serde_json::json!({ "args": args });
    if let Ok(bin) = std::env::var("CHROMIUM") {
        opts["binary"] = bin.into();
    } else if std::path::Path::new("/usr/bin/chromium").exists() {
        opts["binary"] = "/usr/bin/chromium".into();
    }
    caps.insert("goog:chromeOptions".to_owned(), opts);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromedriver session")
}

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Saves a screenshot as `$SCREENSHOTS_DIR/<name>.png` when that is set.
async fn shot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("SCREENSHOTS_DIR") {
        let png = b.screenshot().await.expect("screenshot");
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The text of the first element matching `css`. A click returns before the page it leads to
/// is there on a loaded machine, so the element is waited for (up to 30 s). The live pages
/// replace their contents while a test reads them: an element found just before a refresh is
/// stale by the time its text is asked for, and is then found again.
async fn text(b: &Browser, css: &str) -> String {
    let mut tries = 0;
    loop {
        let el = b
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match el.text().await {
            Ok(t) => return t,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && tries < 10 =>
            {
                tries += 1;
            }
            Err(e) => panic!("text of {css}: {e}"),
        }
    }
}

/// Waits until `css` holds `want` (reloading the page if `reload`), or panics with what it held.
async fn wait_text(b: &Browser, css: &str, want: &str, reload: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = match b.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} holds {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if reload {
            b.refresh().await.unwrap();
        }
    }
}

/// A count cell of the overview: `data-k` `key` of the row of `queue`.
fn cell(queue: &str, key: &str) -> String {
    format!("#queues tr[data-queue=\"{queue}\"] td[data-k=\"{key}\"]")
}

/// The whole walk through, in one browser session (a session costs seconds to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let s = seed().await;
    let inspector = Inspector::new(&s.client);
    let (_driver, port) = chromedriver();
    let base = serve(router(
        &s.client,
        DashboardConfig::new()
            .token(TOKEN)
            .refresh(Duration::from_millis(500)),
    ))
    .await;
    let ro_base = serve(router(
        &s.client,
        DashboardConfig::new().read_only(true).prefix("/ro"),
    ))
    .await;
    let worker = Worker::builder()
        .redis_url(s.server.url())
        .namespace(NS)
        .queues(["billing"])
        .queue_shards("billing", 2)
        .register(charge)
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .await
        .expect("worker");
    let stop = worker.shutdown_handle();
    let worker_run = tokio::spawn(worker.run(std::future::pending()));
    let b = browser(port).await;

    // Refused without the token: the login page, and no data.
    b.goto(&format!("{base}/queues/billing/dead"))
        .await
        .unwrap();
    assert_eq!(text(&b, "h1").await, "Log in");
    assert!(!b.source().await.unwrap().contains("doomed-a"));
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("wrong")
        .await
        .unwrap();
    b.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&b, "#login-error").await, "Wrong token.");
    shot(&b, "login").await;
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Logged in, and back where we were going.
    wait_text(
        &b,
        "#tasks tr[data-id=\"doomed-a\"] td a code",
        "doomed-a",
        false,
    )
    .await;
    shot(&b, "dead").await;

    // The overview's counts are the Inspector's.
    b.goto(&format!("{base}/")).await.unwrap();
    for q in ["emails", "billing"] {
        let c = inspector.queue(q).await.unwrap().total;
        for (k, n) in [
            ("scheduled", c.scheduled),
            ("ready", c.ready),
            ("running", c.running),
            ("dead", c.dead),
        ] {
            assert_eq!(text(&b, &cell(q, k)).await, n.to_string(), "{q} {k}");
        }
    }
    // Live: a task enqueued now shows without a reload.
    s.client
        .enqueue_request(
            TaskRequest::new("send", "emails", &(3, "live"))
                .unwrap()
                .id("live")
                .countdown(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let scheduled = inspector.queue("emails").await.unwrap().total.scheduled;
    wait_text(
        &b,
        &cell("emails", "scheduled"),
        &scheduled.to_string(),
        false,
    )
    .await;
    shot(&b, "overview").await;

    // Open a dead task and requeue it: it runs on the worker, the counts change.
    b.goto(&format!("{base}/queues/billing/dead"))
        .await
        .unwrap();
    b.find(Locator::Css("#tasks tr[data-id=\"doomed-a\"] td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&b, "#state").await, "dead");
    assert!(text(&b, "tr[data-field=\"error\"]")
        .await
        .contains(common::ERROR));
    // Its history of attempts: the run lost with its worker, then the failure that buried it.
    let attempts = text(&b, "#attempts").await;
    assert!(
        attempts.contains("lease expired: worker lost during attempt 1"),
        "{attempts}"
    );
    assert!(attempts.contains(common::ERROR), "{attempts}");
    shot(&b, "task").await;
    b.find(Locator::Css("#actions button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Waits: the click returns before the redirect's page is there on a loaded machine.
    wait_text(
        &b,
        ".notice",
        "Task requeued: it is ready, attempts reset to 0.",
        false,
    )
    .await;
    wait_text(&b, "#state", "succeeded", true).await;
    // The history goes on: the two failed runs, then the run that succeeded.
    wait_text(
        &b,
        "#attempts tr.attempt:last-child td:nth-child(2)",
        "succeeded",
        false,
    )
    .await;
    assert_eq!(
        b.find_all(Locator::Css("#attempts tr.attempt"))
            .await
            .unwrap()
            .len(),
        3
    );
    b.execute(
        "document.getElementById('attempts').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(&b, "task-attempts").await;
    let c = inspector.queue("billing").await.unwrap().total;
    assert_eq!(c.dead, 1);
    b.goto(&format!("{base}/")).await.unwrap();
    wait_text(&b, &cell("billing", "dead"), "1", false).await;
    // The worker ran it: its heartbeat's lateness shows in the overview (live, no reload).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p99 = text(&b, &cell("billing", "lateness_p99_ms")).await;
        if p99.ends_with("ms") || p99.ends_with(" s") {
            break;
        }
        assert!(Instant::now() < deadline, "billing p99 shows {p99:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&b, "overview").await;

    // Cancel a scheduled task from the list (the browser asks first).
    b.goto(&format!("{base}/queues/emails/scheduled"))
        .await
        .unwrap();
    shot(&b, "scheduled").await;
    b.find(Locator::Css(
        "#tasks tr[data-id=\"soon\"] form[action*=\"/cancel\"] button",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    assert_eq!(b.get_alert_text().await.unwrap(), "Cancel this task?");
    b.accept_alert().await.unwrap();
    wait_text(&b, ".notice", "Task cancelled.", false).await;
    let soon = inspector
        .task(&"emails/soon".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(soon.info.unwrap().state, TaskState::Cancelled);
    assert!(b
        .find(Locator::Css("#tasks tr[data-id=\"soon\"]"))
        .await
        .is_err());

    // The other pages, for the record and the screenshots.
    for (path, name, h1) in [
        ("/queues/emails", "queue", "Queue emails"),
        (
            "/queues/billing/requeue-dead",
            "requeue-all",
            "Requeue every dead task of billing?",
        ),
        (
            "/queues/billing/running",
            "running",
            "Queue billing · running",
        ),
        ("/workers", "workers", "Workers"),
        ("/schedules", "schedules", "Schedules"),
        ("/history", "history-off", "History"),
        ("/limits", "limits", "Limits"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        assert_eq!(text(&b, "h1").await, h1, "{path}");
        shot(&b, name).await;
    }
    // Running: the worker holding the lease (the record's `worker`), its start, its lease end.
    b.goto(&format!("{base}/queues/billing/running"))
        .await
        .unwrap();
    assert_eq!(
        text(&b, "#tasks tr[data-id=\"busy\"] td.worker").await,
        "w-test"
    );
    // No archive configured: the history page says so.
    b.goto(&format!("{base}/history")).await.unwrap();
    assert!(text(&b, "#history-off")
        .await
        .contains("History is not configured"));
    // The worker is listed with its queue.
    assert!(text(&b, "body").await.contains("Schedules"));
    b.goto(&format!("{base}/workers")).await.unwrap();
    assert!(text(&b, "#workers").await.contains("billing"));

    // Read-only: no action anywhere, a badge says so.
    b.goto(&format!("{ro_base}/ro/queues/billing/dead"))
        .await
        .unwrap();
    assert_eq!(text(&b, ".badge.ro").await, "read-only");
    assert!(b.find(Locator::Css("#tasks")).await.is_ok());
    assert!(b
        .find_all(Locator::Css("main form, #requeue-all"))
        .await
        .unwrap()
        .is_empty());
    shot(&b, "read-only").await;
    b.goto(&format!("{ro_base}/ro/tasks/billing/doomed-b"))
        .await
        .unwrap();
    assert!(b
        .find_all(Locator::Css("main form"))
        .await
        .unwrap()
        .is_empty());

    b.close().await.unwrap();
    stop.shutdown();
    worker_run.await.unwrap();
}

/// The history page with an archive: finished attempts listed, the filter form narrows them to
/// the dead ones with their errors, the task link shows every attempt of one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_a_real_browser() {
    let redis = RedisServer::start();
    let pg = PgDb::create("dash_hist");
    let (client, db) = archived(&redis, &pg, 12, 3, 2).await;
    let (_driver, port) = chromedriver();
    let base = serve(router(&client, DashboardConfig::new().history(db))).await;
    let b = browser(port).await;

    b.goto(&format!("{base}/history")).await.unwrap();
    assert_eq!(text(&b, "h1").await, "History");
    let rows = b.find_all(Locator::Css("#history tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 17);
    shot(&b, "history").await;

    // Filter with the form: only the dead, each with its error.
    b.find(Locator::Css("select[name=state] option[value=dead]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.find(Locator::Css("#history-filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_rows(&b, 3).await;
    let table = text(&b, "#history").await;
    for i in 0..3 {
        assert!(table.contains(&format!("doomed #{i}")), "{table}");
    }
    assert!(b
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("state=dead"));

    // A task's id leads to its attempts.
    b.find(Locator::Css("#history tr[data-id=\"dead1\"] td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_rows(&b, 1).await;
    assert_eq!(
        b.find(Locator::Css("input[name=id]"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("dead1")
    );
    b.close().await.unwrap();
}

/// Waits until the history table has `n` rows.
async fn wait_rows(b: &Browser, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = b
            .find_all(Locator::Css("#history tbody tr"))
            .await
            .map_or(0, |r| r.len());
        if got == n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} history rows, not {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
