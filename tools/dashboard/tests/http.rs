//! Every route of the dashboard over HTTP (the router called in process, Redis real): status
//! codes, what the pages say, authentication, read-only mode, the path prefix, paging bounds,
//! and what bad input gets.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use scheduler::{Inspector, TaskState};
use scheduler_dashboard::{router, DashboardConfig};
use tower::ServiceExt as _;

use common::{seed, Seed, ERROR};

/// A response's status, headers and body text.
struct Got {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request<Body>) -> Got {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, path: &str) -> Got {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, path: &str) -> Got {
    send(app, Request::post(path).body(Body::empty()).unwrap()).await
}

fn open(s: &Seed) -> Router {
    router(&s.client, DashboardConfig::new())
}

/// The overview lists every queue with the Inspector's counts, and the JSON endpoint says the
/// same numbers.
#[tokio::test]
async fn overview_matches_the_inspector() {
    let s = seed().await;
    let app = open(&s);
    let g = get(&app, "/").await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.body.contains("data-queue=\"emails\""), "{}", g.body);
    assert!(g.body.contains("data-queue=\"billing\""));
    let j = get(&app, "/api/overview").await;
    assert_eq!(j.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&j.body).unwrap();
    let i = Inspector::new(&s.client);
    for q in v["queues"].as_array().unwrap() {
        let c = i.queue(q["name"].as_str().unwrap()).await.unwrap().total;
        assert_eq!(q["scheduled"], c.scheduled);
        assert_eq!(q["ready"], c.ready);
        assert_eq!(q["running"], c.running);
        assert_eq!(q["dead"], c.dead);
    }
    let billing = &v["queues"][0];
    assert_eq!(billing["name"], "billing");
    assert_eq!(
        (billing["dead"].as_u64(), billing["running"].as_u64()),
        (Some(2), Some(1))
    );
    let emails = &v["queues"][1];
    assert_eq!(
        (emails["scheduled"].as_u64(), emails["ready"].as_u64()),
        (Some(2), Some(2))
    );
}

/// The overview's lateness columns add up the histograms in every live worker's heartbeat (two
/// here, written as workers write them): p50 and p99 come from all their runs together; a queue
/// without runs in the last minute shows none.
#[tokio::test]
async fn overview_lateness_combines_the_workers() {
    let s = seed().await;
    let app = open(&s);
    let keys = s.client.store().keys().clone();
    let mut conn = s.server.conn();
    let mut one = scheduler::LatenessHistogram::default();
    let mut two = scheduler::LatenessHistogram::default();
    // 90 runs on time on one worker, 10 runs 1 s late on the other: p50 0, p99 about 1 s.
    for _ in 0..90 {
        one.record(0);
    }
    for _ in 0..10 {
        two.record(1000);
    }
    for (id, h) in [("w1", &one), ("w2", &two)] {
        let _: () = scheduler::redis::cmd("HSET")
            .arg(keys.worker(id))
            .arg("pid")
            .arg(1)
            .arg("queues")
            .arg("billing,emails")
            .arg("lateness:billing")
            .arg(h.encode())
            .arg("lateness:emails")
            .arg("")
            .query(&mut conn)
            .unwrap();
        let _: () = scheduler::redis::cmd("ZADD")
            .arg(keys.worker_index())
            .arg(1)
            .arg(id)
            .query(&mut conn)
            .unwrap();
    }
    let j = get(&app, "/api/overview").await;
    let v: serde_json::Value = serde_json::from_str(&j.body).unwrap();
    let billing = &v["queues"][0];
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["lateness_runs"], 100);
    assert_eq!(billing["lateness_p50_ms"], 0);
    let p99 = billing["lateness_p99_ms"].as_i64().unwrap();
    assert!((1000..=1091).contains(&p99), "{p99}");
    let emails = &v["queues"][1];
    assert_eq!(emails["lateness_runs"], 0);
    assert!(emails["lateness_p99_ms"].is_null());
    let g = get(&app, "/").await;
    assert!(g.body.contains("Late p99"), "{}", g.body);
    assert!(g.body.contains("100 runs in the last minute"));
}

/// A queue page, each listed state, a task page, workers, schedules, limits, workflows and a
/// paused queue all answer 200 with what they are about; the assets have their content types.
#[tokio::test]
async fn every_page_renders() {
    let s = seed().await;
    let app = open(&s);
    let q = get(&app, "/queues/emails").await;
    assert_eq!(q.status, StatusCode::OK);
    assert!(q.body.contains("next hour"));
    for (state, ids) in [
        ("scheduled", &["soon", "later"][..]),
        ("ready", &["now-1", "now-2"][..]),
        ("running", &["busy"][..]),
        ("dead", &["doomed-a", "doomed-b"][..]),
    ] {
        let queue = if ["running", "dead"].contains(&state) {
            "billing"
        } else {
            "emails"
        };
        let g = get(&app, &format!("/queues/{queue}/{state}")).await;
        assert_eq!(g.status, StatusCode::OK, "{state}: {}", g.body);
        for id in ids {
            assert!(
                g.body.contains(&format!("data-id=\"{id}\"")),
                "{state} lists {id}"
            );
        }
    }
    // Running: the worker holding the lease and when its run started (issue 15).
    let running = get(&app, "/queues/billing/running").await;
    for col in ["Worker", "Started", "Lease ends"] {
        assert!(running.body.contains(col), "{}", running.body);
    }
    assert!(
        running.body.contains("<code>w-test</code>"),
        "{}",
        running.body
    );
    let dead = get(&app, "/queues/billing/dead").await;
    assert!(dead.body.contains(ERROR));
    assert!(dead.body.contains("Requeue all dead"));
    let t = get(&app, "/tasks/emails/later").await;
    assert_eq!(t.status, StatusCode::OK);
    // The arguments decoded from MessagePack.
    assert!(t.body.contains("&quot;hello&quot;"), "{}", t.body);
    assert!(t.body.contains("data-field=\"run_at\""));
    // A progress report: a bar with the percent, the message, when and by which run.
    let b = get(&app, "/tasks/billing/busy").await;
    assert_eq!(b.status, StatusCode::OK);
    assert!(
        b.body.contains("<progress max=\"100\" value=\"40\">"),
        "{}",
        b.body
    );
    for field in ["progress_msg", "progress_at", "progress_attempt"] {
        assert!(
            b.body.contains(&format!("data-field=\"{field}\"")),
            "{field}"
        );
    }
    assert!(b.body.contains("8000 of 20000 rows"));
    // The history of attempts: the run lost with its worker, then the failure that buried it.
    let a = get(&app, "/tasks/billing/doomed-a").await;
    assert!(a.body.contains("id=\"attempts\""), "{}", a.body);
    assert!(a.body.contains("data-attempt=\"1\""), "{}", a.body);
    assert!(a
        .body
        .contains("lease expired: worker lost during attempt 1"));
    assert!(a.body.contains("<code>w-lost</code>"));
    assert!(a.body.contains("data-attempt=\"2\""));
    assert!(a.body.contains("<code>w-test</code>"));
    assert!(!a.body.contains("data-field=\"attempt_log\""));
    // The running task: its run in progress.
    assert!(b.body.contains("data-attempt=\"1\""), "{}", b.body);
    // Never started: no attempt.
    assert!(t.body.contains("No run has started yet."));
    let w = get(&app, "/workers").await;
    assert_eq!(w.status, StatusCode::OK);
    assert!(w.body.contains("No live worker"));
    let sc = get(&app, "/schedules").await;
    assert_eq!(sc.status, StatusCode::OK);
    assert!(sc.body.contains("data-schedule=\"nightly\""));
    // No archive configured: the page (and its nav link) says so.
    assert!(sc.body.contains("href=\"/history\""));
    let h = get(&app, "/history").await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.body.contains("History is not configured"), "{}", h.body);
    // Limits: none, then the one set shows with its scope.
    let l = get(&app, "/limits").await;
    assert_eq!(l.status, StatusCode::OK);
    assert!(l.body.contains("No limit is set"), "{}", l.body);
    let inspector = Inspector::new(&s.client);
    inspector
        .set_limit(
            &scheduler::limits::LimitScope::key("tenant").unwrap(),
            scheduler::limits::Limit::concurrency(5).unwrap(),
        )
        .await
        .unwrap();
    let l = get(&app, "/limits").await;
    assert!(l.body.contains("<code>key:tenant</code>"), "{}", l.body);
    assert!(l.body.contains("at most 5 at once"), "{}", l.body);
    // Workflows: a lookup form; an unknown id says so.
    let w = get(&app, "/workflows").await;
    assert_eq!(w.status, StatusCode::OK);
    assert!(w.body.contains("name=\"id\""), "{}", w.body);
    let w = get(&app, "/workflows?id=nope").await;
    assert_eq!(w.status, StatusCode::OK);
    assert!(w.body.contains("not found"), "{}", w.body);
    // A paused queue says so on the overview.
    inspector.pause("emails").await.unwrap();
    let o = get(&app, "/").await;
    assert!(o.body.contains("badge paused"), "{}", o.body);
    let v: serde_json::Value =
        serde_json::from_str(&get(&app, "/api/overview").await.body).unwrap();
    assert!(v["queues"][1]["paused_at_ms"].as_i64().is_some(), "{v}");
    assert!(v["queues"][0]["paused_at_ms"].is_null(), "{v}");
    let css = get(&app, "/assets/style.css").await;
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let js = get(&app, "/assets/app.js").await;
    assert!(js.body.contains("/api/overview"));
}

/// The limits page: what each task limit holds now (runs holding a slot, tasks waiting for
/// one, starts in the rate window), read from a real worker the limit holds back; a keyed limit
/// by key (`?family=&key=`); a malformed key 400, a family without a limit said so.
#[tokio::test]
async fn limits_show_usage() {
    use common::{limited, release_holds, HOLD_CONCURRENCY, HOLD_TASKS};
    let redis = scheduler_testkit::RedisServer::start();
    let (client, worker) = limited(&redis).await;
    let app = router(&client, DashboardConfig::new());
    let l = get(&app, "/limits").await;
    assert_eq!(l.status, StatusCode::OK);
    let row = row_of(&l.body, "task:hold");
    let waiting = HOLD_TASKS - HOLD_CONCURRENCY;
    for (col, want) in [
        ("running", HOLD_CONCURRENCY),
        ("waiting", waiting),
        // The waiting task has not started: the window holds the running ones.
        ("started", HOLD_CONCURRENCY),
    ] {
        assert!(
            row.contains(&format!("class=\"num {col}\">{want}")),
            "{col}: {row}"
        );
    }
    assert!(row.contains(&format!(" / {HOLD_CONCURRENCY}")), "{row}");
    assert!(row.contains("per 60s"), "{row}");
    // The keyed limit: looked up by key.
    let keyed = row_of(&l.body, "key:tenant");
    assert!(keyed.contains("one budget per key"), "{keyed}");
    assert!(l.body.contains("id=\"key-lookup\""), "{}", l.body);
    for path in ["/limits?family=tenant&key=acme", "/limits?key=acme"] {
        let k = get(&app, path).await;
        assert_eq!(k.status, StatusCode::OK, "{path}: {}", k.body);
        let row = row_of(&k.body, "key:tenant=acme");
        assert!(
            row.contains(&format!("class=\"num running\">{HOLD_CONCURRENCY}")),
            "{path}: {row}"
        );
        assert!(row.contains("class=\"num waiting\">0"), "{path}: {row}");
    }
    // A key no task used: zeros.
    let k = get(&app, "/limits?family=tenant&key=nobody").await;
    assert!(
        row_of(&k.body, "key:tenant=nobody").contains("class=\"num running\">0"),
        "{}",
        k.body
    );
    let k = get(&app, "/limits?family=region&key=eu").await;
    assert_eq!(k.status, StatusCode::OK);
    assert!(k.body.contains("key:region has no limit"), "{}", k.body);
    let long = "x".repeat(scheduler::limits::MAX_LIMIT_KEY_BYTES + 1);
    for bad in [
        "/limits?family=a%7Bb%7D&key=x".to_owned(),
        format!("/limits?family=tenant&key={long}"),
    ] {
        let k = get(&app, &bad).await;
        assert_eq!(k.status, StatusCode::BAD_REQUEST, "{bad}: {}", k.body);
        assert!(k.body.contains("invalid limit"), "{}", k.body);
    }
    release_holds();
    worker.stop().await;
}

/// The `<tr>` of the limits page whose `data-scope` is `scope`.
fn row_of<'a>(body: &'a str, scope: &str) -> &'a str {
    let start = body
        .find(&format!("data-scope=\"{scope}\""))
        .unwrap_or_else(|| panic!("no row {scope}: {body}"));
    let rest = &body[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// Bad input: unknown queue or task 404, malformed queue, id, state, cursor or limit 400, a
/// page past the end 404, an unknown path 404, each with a message.
#[tokio::test]
async fn bad_input_gets_clear_statuses() {
    let s = seed().await;
    let app = open(&s);
    for (path, status, says) in [
        ("/queues/nope", StatusCode::NOT_FOUND, "unknown queue"),
        ("/queues/nope/dead", StatusCode::NOT_FOUND, "unknown queue"),
        ("/tasks/emails/missing", StatusCode::NOT_FOUND, "not found"),
        ("/tasks/nope/x", StatusCode::NOT_FOUND, "unknown queue"),
        (
            "/queues/bad%20name",
            StatusCode::BAD_REQUEST,
            "invalid queue name",
        ),
        (
            "/tasks/emails/a%0Ab",
            StatusCode::BAD_REQUEST,
            "invalid task id",
        ),
        (
            "/queues/emails/finished",
            StatusCode::BAD_REQUEST,
            "not a listed state",
        ),
        (
            "/queues/emails/succeeded",
            StatusCode::BAD_REQUEST,
            "not a listed state",
        ),
        (
            "/queues/emails/ready?cursor=zz",
            StatusCode::BAD_REQUEST,
            "invalid page cursor",
        ),
        (
            "/queues/emails/ready?limit=0",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/queues/emails/ready?limit=100000",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/queues/emails/ready?cursor=9:0",
            StatusCode::NOT_FOUND,
            "past the end",
        ),
        (
            "/queues/emails/ready?cursor=1:500",
            StatusCode::NOT_FOUND,
            "past the end",
        ),
        ("/no/such/page", StatusCode::NOT_FOUND, "No such page"),
    ] {
        let g = get(&app, path).await;
        assert_eq!(g.status, status, "{path}: {}", g.body);
        assert!(g.body.contains(says), "{path} says {says:?}: {}", g.body);
    }
    for (path, status) in [
        ("/tasks/billing/busy/delete", StatusCode::CONFLICT),
        ("/tasks/emails/later/requeue", StatusCode::CONFLICT),
        ("/tasks/emails/later/explode", StatusCode::NOT_FOUND),
        ("/tasks/emails/missing/delete", StatusCode::NOT_FOUND),
        ("/schedules/missing/pause", StatusCode::NOT_FOUND),
        ("/schedules/nightly/explode", StatusCode::NOT_FOUND),
    ] {
        let g = post(&app, path).await;
        assert_eq!(g.status, status, "POST {path}: {}", g.body);
    }
    // Cancelling a running task asks its worker to stop it (docs/flow-control.md): it is still
    // running until the worker does.
    let g = post(&app, "/tasks/billing/busy/cancel").await;
    assert_eq!(g.status, StatusCode::SEE_OTHER, "{}", g.body);
    assert_eq!(
        g.headers[header::LOCATION],
        "/tasks/billing/busy?done=cancel-requested"
    );
    // Nothing else changed.
    let c = Inspector::new(&s.client)
        .queue("billing")
        .await
        .unwrap()
        .total;
    assert_eq!((c.running, c.dead), (1, 2));
}

/// Paging: a limit of 1 walks the ready tasks one page at a time through `next`, to the end.
#[tokio::test]
async fn paging_walks_to_the_end() {
    let s = seed().await;
    let app = open(&s);
    let mut path = "/queues/emails/ready?limit=1".to_owned();
    let mut seen = Vec::new();
    loop {
        let g = get(&app, &path).await;
        assert_eq!(g.status, StatusCode::OK, "{path}");
        let ids: Vec<&str> = g
            .body
            .split("data-id=\"")
            .skip(1)
            .map(|r| &r[..r.find('"').unwrap()])
            .collect();
        assert_eq!(ids.len(), 1, "{path}");
        seen.push(ids[0].to_owned());
        let Some(at) = g.body.find("id=\"next\" href=\"") else {
            break;
        };
        let rest = &g.body[at + "id=\"next\" href=\"".len()..];
        path = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    }
    seen.sort();
    assert_eq!(seen, ["now-1", "now-2"]);
}

/// Actions: cancel a scheduled task, requeue a dead one, delete one, requeue every dead task
/// after confirming, pause, resume and trigger a schedule; each redirects with a notice.
#[tokio::test]
async fn actions_change_state() {
    let s = seed().await;
    let app = open(&s);
    let i = Inspector::new(&s.client);
    let g = post(&app, "/tasks/emails/soon/cancel").await;
    assert_eq!(g.status, StatusCode::SEE_OTHER);
    assert_eq!(
        g.headers[header::LOCATION],
        "/tasks/emails/soon?done=cancelled"
    );
    let soon = i.task(&"emails/soon".parse().unwrap()).await.unwrap();
    assert_eq!(soon.info.unwrap().state, TaskState::Cancelled);
    let g = get(&app, "/tasks/emails/soon?done=cancelled").await;
    assert!(g.body.contains("Task cancelled."));

    let g = post(
        &app,
        "/tasks/billing/doomed-a/requeue?back=/queues/billing/dead",
    )
    .await;
    assert_eq!(g.status, StatusCode::SEE_OTHER);
    assert_eq!(
        g.headers[header::LOCATION],
        "/queues/billing/dead?done=requeued"
    );
    // A `back` off this dashboard is ignored.
    let g = post(
        &app,
        "/tasks/emails/now-1/delete?back=https://evil.example/",
    )
    .await;
    assert_eq!(g.headers[header::LOCATION], "/queues/emails?done=deleted");
    assert!(i.task(&"emails/now-1".parse().unwrap()).await.is_err());
    let c = i.queue("billing").await.unwrap().total;
    assert_eq!((c.ready, c.dead), (1, 1));

    let confirm = get(&app, "/queues/billing/requeue-dead").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Requeue 1 tasks"));
    let unconfirmed = send(
        &app,
        Request::post("/queues/billing/requeue-dead")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(""))
            .unwrap(),
    )
    .await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert_eq!(i.queue("billing").await.unwrap().total.dead, 1);
    let done = send(
        &app,
        Request::post("/queues/billing/requeue-dead")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("confirm=yes"))
            .unwrap(),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let c = i.queue("billing").await.unwrap().total;
    assert_eq!((c.ready, c.dead), (2, 0));

    let schedules = scheduler::Schedules::new(&s.client);
    assert_eq!(
        post(&app, "/schedules/nightly/pause").await.status,
        StatusCode::SEE_OTHER
    );
    assert!(schedules.get("nightly").await.unwrap().paused);
    assert_eq!(
        post(&app, "/schedules/nightly/resume").await.status,
        StatusCode::SEE_OTHER
    );
    assert!(!schedules.get("nightly").await.unwrap().paused);
    let before = i.queue("emails").await.unwrap().total.ready;
    assert_eq!(
        post(&app, "/schedules/nightly/trigger").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(i.queue("emails").await.unwrap().total.ready, before + 1);
}

/// With a token: nothing but the login page and the assets without it (401, no data); the
/// bearer header and the login cookie let in; a wrong token is refused; JSON callers get JSON.
/// Basic auth lets in with the right user and password only.
#[tokio::test]
async fn credentials_are_required() {
    let s = seed().await;
    let app = router(
        &s.client,
        DashboardConfig::new()
            .token("t0ken")
            .basic_auth("ops", "pa55"),
    );
    let g = get(&app, "/queues/billing/dead").await;
    assert_eq!(g.status, StatusCode::UNAUTHORIZED);
    assert!(g.body.contains("Log in"));
    assert!(!g.body.contains("doomed"), "no data without credentials");
    assert_eq!(
        get(&app, "/api/overview").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&app, "/tasks/billing/doomed-a/requeue").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&app, "/assets/style.css").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/login").await.status, StatusCode::OK);

    let with = |h: &str| {
        Request::get("/api/overview")
            .header(header::AUTHORIZATION, h)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, with("Bearer t0ken")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with("Bearer wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        send(&app, with(&format!("Basic {}", b64("ops:pa55"))))
            .await
            .status,
        StatusCode::OK
    );
    let bad = send(&app, with(&format!("Basic {}", b64("ops:nope")))).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("Wrong or expired credentials"));

    // The login form: a wrong token is 401, the right one sets the cookie and goes on.
    let form = |token: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next=/queues/billing")))
            .unwrap()
    };
    assert_eq!(
        send(&app, form("nope")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = send(&app, form("t0ken")).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.headers[header::LOCATION], "/queues/billing");
    let cookie = ok.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap().to_owned();
    let g = send(
        &app,
        Request::get("/queues/billing")
            .header(header::COOKIE, &pair)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.body.contains("Log out"));
    // An action from another site is refused even with credentials.
    let cross = send(
        &app,
        Request::post("/tasks/billing/doomed-a/requeue")
            .header(header::COOKIE, &pair)
            .header(header::HOST, "dash.local")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    // `next` off the dashboard is ignored.
    let off = send(
        &app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("token=t0ken&next=//evil.example/"))
            .unwrap(),
    )
    .await;
    assert_eq!(off.headers[header::LOCATION], "/");
    assert_eq!(
        Inspector::new(&s.client)
            .queue("billing")
            .await
            .unwrap()
            .total
            .dead,
        2
    );
}

/// Read-only: pages show no action button, every action is 403, nothing changes.
#[tokio::test]
async fn read_only_refuses_actions() {
    let s = seed().await;
    let app = router(&s.client, DashboardConfig::new().read_only(true));
    // Running: the worker holding the lease and when its run started (issue 15).
    let running = get(&app, "/queues/billing/running").await;
    for col in ["Worker", "Started", "Lease ends"] {
        assert!(running.body.contains(col), "{}", running.body);
    }
    assert!(
        running.body.contains("<code>w-test</code>"),
        "{}",
        running.body
    );
    let dead = get(&app, "/queues/billing/dead").await;
    assert_eq!(dead.status, StatusCode::OK);
    assert!(dead.body.contains("read-only"));
    assert!(!dead.body.contains("Requeue"), "{}", dead.body);
    let t = get(&app, "/tasks/billing/doomed-a").await;
    assert!(!t.body.contains("id=\"actions\""));
    assert!(!get(&app, "/schedules").await.body.contains("Pause"));
    for path in [
        "/tasks/billing/doomed-a/requeue",
        "/tasks/emails/later/cancel",
        "/tasks/emails/later/delete",
        "/queues/billing/requeue-dead",
        "/schedules/nightly/pause",
    ] {
        let g = post(&app, path).await;
        assert_eq!(g.status, StatusCode::FORBIDDEN, "{path}");
        assert!(g.body.contains("read-only"));
    }
    let c = Inspector::new(&s.client)
        .queue("billing")
        .await
        .unwrap()
        .total;
    assert_eq!(c.dead, 2);
}

/// Under a prefix: pages answer there and link there; the root answers 404; the prefix with or
/// without its final `/` is the overview.
#[tokio::test]
async fn serves_under_a_prefix() {
    let s = seed().await;
    let app = router(&s.client, DashboardConfig::new().prefix("/ops/tasks/"));
    let slash = get(&app, "/ops/tasks/").await;
    assert_eq!(slash.headers[header::LOCATION], "/ops/tasks");
    let g = get(&app, "/ops/tasks").await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.body.contains("href=\"/ops/tasks/queues/billing\""));
    assert!(g.body.contains("href=\"/ops/tasks/assets/style.css\""));
    assert_eq!(
        get(&app, "/ops/tasks/queues/billing/dead").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/ops/tasks/assets/app.js").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/queues/billing").await.status,
        StatusCode::NOT_FOUND
    );
    let act = post(&app, "/ops/tasks/tasks/billing/doomed-a/requeue").await;
    assert_eq!(
        act.headers[header::LOCATION],
        "/ops/tasks/tasks/billing/doomed-a?done=requeued"
    );
}

/// Redis down: 503 with a plain message, no Redis error text.
#[tokio::test]
async fn redis_failure_is_503_without_detail() {
    let s = seed().await;
    let app = open(&s);
    drop(s.server);
    let g = get(&app, "/queues/billing").await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(g.body.contains("Redis is unavailable"));
    assert!(
        !g.body.to_lowercase().contains("connection refused"),
        "{}",
        g.body
    );
}

// ---------------------------------------------------------------------------------------------
// The history page, against the real PostgreSQL at 127.0.0.1:5432 (trust authentication, user
// `postgres`) and a worker archiving what it runs.

mod history {
    use std::collections::HashSet;

    use scheduler::archive::HistoryQuery;
    use scheduler_dashboard::{router, DashboardConfig};
    use scheduler_testkit::RedisServer;

    use super::common::{archived, PgDb, HIST_NS};
    use super::{get, StatusCode};

    /// `data-id="..."` of every row of a page.
    fn ids(body: &str) -> Vec<String> {
        body.split("<tr data-id=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_owned())
            .collect()
    }

    /// The "Next page" link of a page, unescaped.
    fn next(body: &str) -> Option<String> {
        let at = body.find("id=\"next\" href=\"")? + "id=\"next\" href=\"".len();
        Some(body[at..at + body[at..].find('"')?].replace("&amp;", "&"))
    }

    /// A worker archives 60 successes, 3 deaths and 2 cancellations; the history page lists
    /// them newest first, walks them page by page (each once), filters by state, task id, name,
    /// queue and time range, refuses bad filters and cursors with 400, a page past the end with
    /// 404, and answers 503 without detail once the database is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_page_searches_the_archive() {
        let redis = RedisServer::start();
        let pg = PgDb::create("dash_hist");
        let (c, db) = archived(&redis, &pg, 60, 3, 2).await;
        let newest_first: Vec<String> = db
            .query(&HistoryQuery::new(HIST_NS).limit(1000))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.task_id)
            .collect();

        let app = router(&c, DashboardConfig::new().history(db));
        let first = get(&app, "/history").await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert!(!first.body.contains("not configured"));
        assert_eq!(ids(&first.body).len(), 50, "the default page size");

        // Page by page: every finished attempt once, newest first.
        let mut seen = Vec::new();
        let mut path = Some("/history?limit=20".to_owned());
        let mut pages = 0;
        while let Some(p) = path {
            let g = get(&app, &p).await;
            assert_eq!(g.status, StatusCode::OK, "{p}: {}", g.body);
            seen.extend(ids(&g.body));
            path = next(&g.body);
            pages += 1;
        }
        assert_eq!(pages, 4, "20 + 20 + 20 + 5");
        assert_eq!(seen.len(), 65);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 65, "none twice");
        assert_eq!(seen, newest_first, "in the archive's order");

        // Filters.
        let dead = get(&app, "/history?state=dead").await;
        let mut d = ids(&dead.body);
        d.sort();
        assert_eq!(d, ["dead0", "dead1", "dead2"]);
        assert!(dead.body.contains("doomed #1"), "{}", dead.body);
        let cancelled = get(&app, "/history?state=cancelled&queue=hq").await;
        assert_eq!(ids(&cancelled.body).len(), 2);
        let one = get(&app, "/history?id=ok7").await;
        assert_eq!(ids(&one.body), ["ok7"]);
        assert!(one.body.contains("14"), "the result, 7 doubled");
        let named = get(&app, "/history?name=doomed&limit=2").await;
        assert_eq!(ids(&named.body).len(), 2);
        assert!(next(&named.body).is_some());
        for (q, n) in [
            ("since=1h&limit=100", 65),
            ("until=1h", 0),
            ("since=2000-01-01T00:00&until=2999-01-01&limit=100", 65),
            ("queue=other", 0),
            ("id=&name=&queue=&state=&since=&until=", 50),
        ] {
            let g = get(&app, &format!("/history?{q}")).await;
            assert_eq!(g.status, StatusCode::OK, "{q}");
            assert_eq!(ids(&g.body).len(), n, "{q}");
        }
        assert!(get(&app, "/history?until=1h")
            .await
            .body
            .contains("No finished attempt matches"));

        // Bad input.
        for (q, status, says) in [
            (
                "state=running",
                StatusCode::BAD_REQUEST,
                "succeeded, dead, cancelled and expired",
            ),
            (
                "queue=bad%20q",
                StatusCode::BAD_REQUEST,
                "invalid queue name",
            ),
            ("since=yesterday", StatusCode::BAD_REQUEST, "since"),
            ("limit=0", StatusCode::BAD_REQUEST, "limit"),
            ("after=garbage", StatusCode::BAD_REQUEST, "cursor"),
            ("after=1:0:1-0:hq", StatusCode::NOT_FOUND, "past the end"),
        ] {
            let g = get(&app, &format!("/history?{q}")).await;
            assert_eq!(g.status, status, "{q}: {}", g.body);
            assert!(g.body.contains(says), "{q} says {says:?}: {}", g.body);
        }

        // The database gone: 503, and no PostgreSQL detail on the page.
        drop(pg);
        let g = get(&app, "/history").await;
        assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE, "{}", g.body);
        assert!(g.body.contains("history database is unavailable"));
        assert!(!g.body.contains("sched_dash_hist"), "{}", g.body);
    }
}
