//! One handler per page and per action. Each reads through the [`Inspector`] or [`Schedules`]
//! (O(shards) commands, or one bounded page of tasks) and renders with maud.
//!
//! [`Inspector`]: scheduler_core::Inspector
//! [`Schedules`]: scheduler_core::Schedules

use crate::format::TIME_FIELDS;
use std::sync::Arc;

use crate::format::iso_utc;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use scheduler_core::inspector::MAX_PAGE;
use scheduler_core::{Counts, Error, LatenessHistogram, Spec, TaskId, TaskState};
use serde::Deserialize;

use crate::auth::shows_logout;
use crate::error::{Failure, PageError};
use crate::view::{action, count, layout, msgpack_json, span, utc, when, Frame, Nav};
use crate::App;

/// Tasks per page unless `limit` says otherwise.
pub(crate) const DEFAULT_PAGE: usize = 50;

/// The states that have a set, hence a list.
const LISTED: [TaskState; 4] = [
    TaskState::Scheduled,
    TaskState::Ready,
    TaskState::Running,
    TaskState::Dead,
];

type Page = Result<Response, Failure>;

impl App {
    pub(crate) fn fail(&self, e: impl Into<PageError>) -> Failure {
        Failure {
            error: e.into(),
            prefix: self.config.prefix.clone(),
        }
    }

    pub(crate) fn frame<'a>(
        &'a self,
        headers: &HeaderMap,
        title: &'a str,
        nav: Nav,
        notice: Option<&'a str>,
    ) -> Frame<'a> {
        Frame {
            prefix: &self.config.prefix,
            title,
            nav,
            read_only: self.config.read_only,
            logout: shows_logout(self, headers),
            notice,
        }
    }

    pub(crate) fn p(&self) -> &str {
        &self.config.prefix
    }

    fn can_act(&self) -> bool {
        !self.config.read_only
    }
}

/// A notice to show after an action (`?done=...`).
#[derive(Debug, Deserialize)]
pub(crate) struct Notice {
    done: Option<String>,
}

impl Notice {
    /// Only notices we wrote: the parameter is a code, not text shown as given.
    fn text(&self) -> Option<&'static str> {
        Some(match self.done.as_deref()? {
            "cancelled" => "Task cancelled.",
            "cancel-requested" => "Cancellation requested: the worker running the task stops it.",
            "requeued" => "Task requeued: it is ready, attempts reset to 0.",
            "deleted" => "Task deleted.",
            "requeued-all" => "Dead tasks requeued.",
            "paused" => "Schedule paused.",
            "resumed" => "Schedule resumed.",
            "triggered" => "Schedule triggered: one run enqueued now.",
            _ => return None,
        })
    }
}

fn parse_state(s: &str) -> Result<TaskState, PageError> {
    match s.parse::<TaskState>() {
        Ok(st) if LISTED.contains(&st) => Ok(st),
        _ => Err(PageError::BadRequest(format!(
            "{s:?} is not a listed state: use scheduled, ready, running or dead"
        ))),
    }
}

fn task_id(queue: &str, id: &str) -> Result<TaskId, PageError> {
    scheduler_core::id::validate_queue(queue)?;
    scheduler_core::id::validate_id(id)?;
    Ok(TaskId::new(queue, id))
}

fn queue_href(p: &str, q: &str) -> String {
    format!("{p}/queues/{}", enc(q))
}

fn task_href(p: &str, id: &TaskId) -> String {
    format!("{p}/tasks/{}/{}", enc(id.queue()), enc(id.id()))
}

/// Percent-encodes a path segment (ids may hold `:` and other characters).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Overview

/// One queue's row of the overview, as the JSON endpoint sends it.
#[derive(Debug, serde::Serialize)]
struct QueueRow {
    name: String,
    shards: u16,
    scheduled: u64,
    ready: u64,
    running: u64,
    dead: u64,
    due_now: u64,
    succeeded: u64,
    failed: u64,
    /// Runs started over about the last minute by live workers (their heartbeats).
    lateness_runs: u64,
    /// How late half of them started at most (ms; bucket upper bound); `None` without runs.
    lateness_p50_ms: Option<i64>,
    /// How late 99% of them started at most (ms; bucket upper bound); `None` without runs.
    lateness_p99_ms: Option<i64>,
    /// When the queue was paused (unix ms, Redis clock); `None`: not paused.
    paused_at_ms: Option<i64>,
}

fn row(
    name: String,
    shards: u16,
    c: &Counts,
    late: Option<&LatenessHistogram>,
    paused_at_ms: Option<i64>,
) -> QueueRow {
    let get = |k: &str| c.counters.get(k).copied().unwrap_or(0);
    QueueRow {
        paused_at_ms,
        lateness_runs: late.map_or(0, LatenessHistogram::count),
        lateness_p50_ms: late.and_then(|h| h.quantile(0.5)),
        lateness_p99_ms: late.and_then(|h| h.quantile(0.99)),
        name,
        shards,
        scheduled: c.scheduled,
        ready: c.ready,
        running: c.running,
        dead: c.dead,
        due_now: c.due_now,
        succeeded: get("succeeded"),
        failed: get("retried") + get("dead"),
    }
}

/// Every queue's counts: one `HGETALL` of the registry, then one pipeline per queue; the
/// lateness of the last minute from the live workers' heartbeats (`Inspector::lateness`: the
/// worker index, then one `HGETALL` and `PTTL` per worker).
async fn rows(app: &App) -> Result<(Vec<QueueRow>, i64), Error> {
    let mut out = Vec::new();
    let mut now = 0;
    let late = app.inspector.lateness().await?;
    for q in app.inspector.queues().await? {
        match app.inspector.queue(&q.name).await {
            Ok(c) => {
                now = c.server_now_ms;
                let l = late.get(&q.name);
                out.push(row(q.name, q.shards, &c.total, l, q.paused_at_ms));
            }
            // Unregistered between the two reads.
            Err(Error::UnknownQueue(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        now = app.inspector.server_time_ms().await?;
    }
    Ok((out, now))
}

/// `GET /`: every queue, counts per state; the script refreshes them from `/api/overview` and
/// derives the rates from successive counters.
pub(crate) async fn overview(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Page {
    let (rows, now) = rows(&app).await.map_err(|e| app.fail(e))?;
    let p = app.p();
    let sum = |f: fn(&QueueRow) -> u64| rows.iter().map(f).sum::<u64>();
    let cards = [
        ("scheduled", "Scheduled", sum(|r| r.scheduled)),
        ("ready", "Ready", sum(|r| r.ready)),
        ("running", "Running", sum(|r| r.running)),
        ("dead", "Dead", sum(|r| r.dead)),
        ("due_now", "Due, not promoted", sum(|r| r.due_now)),
    ];
    let refresh_ms = app.config.refresh_interval().as_millis();
    let body = html! {
        div.heading {
            h1 { "Queues" }
            span.muted #live data-refresh-ms=(refresh_ms) {
                "Live · every " (span(refresh_ms as u64)) " · "
                span #updated data-now=(now) { (utc(now)) }
            }
        }
        div.cards {
            @for (key, label, n) in cards {
                div class={ "card stat " (key) } {
                    div.label { (label) }
                    div.value data-total=(key) { (count(n)) }
                }
            }
        }
        @if rows.is_empty() {
            section.card.empty {
                p { "No queue yet: a queue appears here once a task is enqueued to it." }
            }
        } @else {
            table.grid #queues {
                thead { tr {
                    th { "Queue" } th.num { "Shards" } th.num { "Scheduled" } th.num { "Ready" }
                    th.num { "Running" } th.num { "Dead" } th.num { "Due now" }
                    th.num title="Succeeded per second since the previous refresh" { "Done/s" }
                    th.num title="Failed runs (retried or dead) per second since the previous refresh" { "Failed/s" }
                    th.num title=(LATE_TITLE) { "Late p50" }
                    th.num title=(LATE_TITLE) { "Late p99" }
                    th title="A paused queue's tasks are not claimed (schedctl pause / resume)" { "Paused" }
                } }
                tbody {
                    @for r in &rows {
                        tr data-queue=(r.name) {
                            td { a href=(queue_href(p, &r.name)) { (r.name) } }
                            td.num { (r.shards) }
                            @for (k, v, state) in [("scheduled", r.scheduled, "scheduled"), ("ready", r.ready, "ready"), ("running", r.running, "running"), ("dead", r.dead, "dead")] {
                                td.num data-k=(k) {
                                    a href={ (queue_href(p, &r.name)) "/" (state) } class=@if k == "dead" && v > 0 { "bad" } { (count(v)) }
                                }
                            }
                            td.num data-k="due_now" { (count(r.due_now)) }
                            td.num data-rate="succeeded" data-c=(r.succeeded) { "–" }
                            td.num data-rate="failed" data-c=(r.failed) { "–" }
                            td.num data-k="lateness_p50_ms" title=(runs_title(r.lateness_runs)) { (late_ms(r.lateness_p50_ms)) }
                            td.num data-k="lateness_p99_ms" title=(runs_title(r.lateness_runs)) { (late_ms(r.lateness_p99_ms)) }
                            @match r.paused_at_ms {
                                Some(at) => td title={ "since " (iso_utc(at)) } { span.badge.paused { "paused" } },
                                None => td.muted { "no" },
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        &app.frame(&headers, "Overview", Nav::Overview, n.text()),
        body,
    )
    .into_response())
}

/// What the lateness columns show.
const LATE_TITLE: &str = "How late runs started (claim time minus due time) over about the last \
minute, from the histograms in every live worker's heartbeat, added up; at most 9% + 1 ms above \
the exact value";

/// A lateness quantile as the overview shows it (the script formats it the same way).
fn late_ms(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => span(ms.max(0) as u64),
        None => "–".to_owned(),
    }
}

fn runs_title(n: u64) -> String {
    format!("{n} runs in the last minute")
}

/// `GET /api/overview`: what the overview shows, as JSON.
pub(crate) async fn overview_json(State(app): State<Arc<App>>) -> Page {
    let (queues, now) = rows(&app).await.map_err(|e| app.fail(e))?;
    Ok(Json(serde_json::json!({ "server_now_ms": now, "queues": queues })).into_response())
}

// ---------------------------------------------------------------------------------------------
// A queue

fn state_tabs(p: &str, queue: &str, c: &Counts, current: Option<TaskState>) -> Markup {
    html! {
        nav.tabs {
            a href=(queue_href(p, queue)) class=@if current.is_none() { "active" } { "Summary" }
            @for st in LISTED {
                @let n = match st { TaskState::Scheduled => c.scheduled, TaskState::Ready => c.ready, TaskState::Running => c.running, _ => c.dead };
                a href={ (queue_href(p, queue)) "/" (st) } class=@if current == Some(st) { "active" } {
                    (title_case(st)) " " span.pill { (count(n)) }
                }
            }
        }
    }
}

fn title_case(st: TaskState) -> String {
    let s = st.as_str();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `GET /queues/{queue}`: counts per shard, what is due soon, lifetime counters.
pub(crate) async fn queue(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Query(n): Query<Notice>,
) -> Page {
    let i = &app.inspector;
    let counts = i.queue(&queue).await.map_err(|e| app.fail(e))?;
    let mut windows = Vec::new();
    for (label, ms) in [
        ("next minute", 60_000),
        ("next hour", 3_600_000),
        ("next day", 86_400_000),
    ] {
        windows.push((label, i.due(&queue, ms).await.map_err(|e| app.fail(e))?));
    }
    let p = app.p();
    let now = counts.server_now_ms;
    let t = &counts.total;
    let counters = t.ordered_counters();
    let next_due = windows.first().and_then(|(_, d)| d.next_due_ms);
    let max_window = windows
        .iter()
        .map(|(_, d)| d.due_within)
        .max()
        .unwrap_or(0)
        .max(1);
    let body = html! {
        div.heading {
            h1 { "Queue " code { (queue) } }
            span.muted { (counts.per_shard.len()) " shards" }
        }
        (state_tabs(p, &queue, t, None))
        div.cols {
            section.card {
                h2 { "Due" }
                p.muted {
                    "Due now, not promoted yet: " strong #due-now { (count(t.due_now)) }
                    " · next due: "
                    @if let Some(d) = next_due { (when(d, now)) } @else { "nothing scheduled" }
                }
                table.bars {
                    @for (label, d) in &windows {
                        tr {
                            td { (label) }
                            td.bar { span style={ "width:" (d.due_within * 100 / max_window) "%" } {} }
                            td.num { (count(d.due_within)) }
                        }
                    }
                }
            }
            section.card {
                h2 { "Lifetime counters" }
                table.kv {
                    @for (k, v) in &counters { tr { th { (k) } td.num { (count(*v)) } } }
                }
            }
        }
        section.card {
            h2 { "Shards" }
            table.grid #shards {
                thead { tr { th.num { "Shard" } th.num { "Scheduled" } th.num { "Ready" } th.num { "Running" } th.num { "Dead" } th.num { "Due now" } } }
                tbody {
                    @for (s, c) in counts.per_shard.iter().enumerate() {
                        tr { td.num { (s) } td.num { (count(c.scheduled)) } td.num { (count(c.ready)) } td.num { (count(c.running)) } td.num { (count(c.dead)) } td.num { (count(c.due_now)) } }
                    }
                }
            }
        }
    };
    let title = format!("Queue {queue}");
    Ok(layout(&app.frame(&headers, &title, Nav::Overview, n.text()), body).into_response())
}

/// The query of a task list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<String>,
    done: Option<String>,
}

/// `GET /queues/{queue}/{state}`: one page of tasks, with the actions their state allows.
pub(crate) async fn tasks(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((queue, state)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Page {
    let st = parse_state(&state).map_err(|e| app.fail(e))?;
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(app.fail(PageError::BadRequest(format!(
                    "limit {s:?}: use a number from 1 to {MAX_PAGE}"
                ))))
            }
        },
    };
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    let i = &app.inspector;
    let counts = i.queue(&queue).await.map_err(|e| app.fail(e))?;
    let page = i
        .tasks(&queue, st, cursor, limit)
        .await
        .map_err(|e| app.fail(e))?;
    if cursor.is_some() && page.tasks.is_empty() {
        return Err(app.fail(PageError::NotFound(format!(
            "This page is past the end of the {st} tasks of {queue}."
        ))));
    }
    let p = app.p();
    let now = counts.server_now_ms;
    let base = format!("{}/{st}", queue_href(p, &queue));
    let score_label = match st {
        TaskState::Scheduled => "Due",
        TaskState::Ready => "Ready since",
        TaskState::Running => "Lease ends",
        _ => "Died",
    };
    let notice = Notice { done: q.done }.text();
    let here = match cursor {
        Some(c) => format!("{base}?cursor={}&limit={limit}", enc(c)),
        None => format!("{base}?limit={limit}"),
    };
    let act = app.can_act() && st != TaskState::Running;
    let body = html! {
        div.heading {
            h1 { "Queue " a href=(queue_href(p, &queue)) { code { (queue) } } " · " (st) }
            span.muted { (count(page.total)) " in all" }
        }
        (state_tabs(p, &queue, &counts.total, Some(st)))
        @if st == TaskState::Dead && app.can_act() && page.total > 0 {
            div.toolbar {
                a.button.danger #requeue-all href={ (queue_href(p, &queue)) "/requeue-dead" } { "Requeue all dead…" }
            }
        }
        @if page.tasks.is_empty() {
            section.card.empty { p { "No " (st) " task in " (queue) "." } }
        } @else {
            table.grid #tasks {
                thead { tr {
                    th { "Task" } th { "Name" } th.num { "Attempts" }
                    @if st == TaskState::Running { th { "Worker" } th { "Started" } }
                    th { (score_label) } th { "Last error" }
                    @if act { th { "Actions" } }
                } }
                tbody {
                    @for t in &page.tasks {
                        tr data-id=(t.id.id()) {
                            td { a href=(task_href(p, &t.id)) { code { (t.id.id()) } } }
                            td { (t.name.as_deref().unwrap_or("–")) }
                            td.num {
                                (t.attempts.unwrap_or(0))
                                @if st == TaskState::Scheduled && t.attempts.unwrap_or(0) > 0 { " " span.badge.retry title="Waiting for a retry" { "retry" } }
                            }
                            @if st == TaskState::Running {
                                td.worker { @if let Some(w) = &t.worker { code { (w) } } @else { "–" } }
                                td.started { @if let Some(s) = t.started_at_ms { (when(s, now)) } @else { "–" } }
                            }
                            td { @if st == TaskState::Ready { (utc(t.score)) } @else { (when(t.score, now)) } }
                            td.error { (t.error.as_deref().unwrap_or("")) }
                            @if act {
                                td.actions {
                                    @let h = task_href(p, &t.id);
                                    @if st == TaskState::Dead {
                                        (action(&format!("{h}/requeue?back={}", enc(&here)), "Requeue", "small", None))
                                    } @else {
                                        (action(&format!("{h}/cancel?back={}", enc(&here)), "Cancel", "small", Some("Cancel this task?")))
                                    }
                                    (action(&format!("{h}/delete?back={}", enc(&here)), "Delete", "small danger", Some("Delete this task for good?")))
                                }
                            }
                        }
                    }
                }
            }
        }
        div.pager {
            @if cursor.is_some() { a.button href={ (base) "?limit=" (limit) } { "First page" } }
            @if let Some(next) = &page.next { a.button #next href={ (base) "?cursor=" (enc(next)) "&limit=" (limit) } { "Next page →" } }
        }
    };
    let title = format!("{queue} · {st}");
    Ok(layout(&app.frame(&headers, &title, Nav::Overview, notice), body).into_response())
}

// ---------------------------------------------------------------------------------------------
// A task

/// Fields of a task record in display order; others follow by name.
const FIELD_ORDER: [&str; 22] = [
    "name",
    "state",
    "attempts",
    "lost",
    "max_retries",
    "timeout_ms",
    "priority",
    "run_at",
    "enqueued_at",
    "expires",
    "token",
    "started_at",
    "worker",
    "progress",
    "progress_msg",
    "progress_at",
    "progress_attempt",
    "error",
    "finished_at",
    "args",
    "headers",
    "result",
];

/// `GET /tasks/{queue}/{id}`: every field, arguments and result as JSON, the actions.
pub(crate) async fn task(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((queue, id)): Path<(String, String)>,
    Query(n): Query<Notice>,
) -> Page {
    let id = task_id(&queue, &id).map_err(|e| app.fail(e))?;
    let d = app.inspector.task(&id).await.map_err(|e| app.fail(e))?;
    let p = app.p();
    let now = d.server_now_ms;
    let state = d.info.as_ref().map(|i| i.state);
    let mut names: Vec<&str> = FIELD_ORDER
        .iter()
        .copied()
        .filter(|f| d.fields.contains_key(*f))
        .collect();
    names.extend(
        d.fields
            .keys()
            .map(String::as_str)
            .filter(|f| !FIELD_ORDER.contains(f) && *f != "attempt_log"),
    );
    let h = task_href(p, &id);
    let failed = d
        .info
        .as_ref()
        .map(|i| i.attempt_log.as_slice())
        .unwrap_or_default();
    let body = html! {
        div.heading {
            h1 { "Task " code { (id.id()) } }
            @if let Some(s) = state { span class={ "badge state " (s) } #state { (s) } } @else { span.badge.bad { "unreadable record" } }
        }
        p.muted {
            "Queue " a href=(queue_href(p, id.queue())) { (id.queue()) } " · shard " (d.shard) " of " (d.shards)
            " · key " code { (d.key) }
        }
        @if app.can_act() {
            div.toolbar #actions {
                @if matches!(state, Some(TaskState::Scheduled | TaskState::Ready)) {
                    (action(&format!("{h}/cancel"), "Cancel", "", Some("Cancel this task?")))
                }
                @if state == Some(TaskState::Dead) {
                    (action(&format!("{h}/requeue"), "Requeue", "primary", None))
                }
                @if state != Some(TaskState::Running) {
                    (action(&format!("{h}/delete"), "Delete", "danger", Some("Delete this task for good?")))
                }
            }
        }
        section.card {
            table.kv #fields {
                @for f in &names {
                    @let v = &d.fields[*f];
                    @let text = String::from_utf8_lossy(v);
                    tr data-field=(f) {
                        th { (f) }
                        td {
                            @if TIME_FIELDS.contains(f) {
                                @match text.parse::<i64>() {
                                    Ok(ms) => { (when(ms, now)) span.muted { " · " (utc(ms)) } }
                                    Err(_) => { (text) }
                                }
                            } @else if *f == "args" || *f == "result" || *f == "headers" {
                                pre.json { (msgpack_json(v)) }
                            } @else if *f == "error" {
                                pre.error { (text) }
                            } @else if *f == "progress" {
                                @match text.parse::<u8>() {
                                    Ok(pct) => { progress max="100" value=(pct) { (pct) "%" } " " (pct) "%" }
                                    Err(_) => { (text) }
                                }
                            } @else if *f == "timeout_ms" {
                                (text)
                                @if let Ok(ms) = text.parse::<u64>() { span.muted { " (" (span(ms)) ")" } }
                            } @else {
                                (text)
                            }
                        }
                    }
                }
                @if let Some(l) = d.lease_deadline_ms {
                    tr data-field="lease_deadline" { th { "lease deadline" } td { (when(l, now)) } }
                }
                @if let Some(e) = d.expires_at_ms {
                    tr data-field="expires" { th { "record expires" } td { (when(e, now)) } }
                }
            }
        }
        (attempts(&app, &d, failed, now))
    };
    let title = format!("Task {}", id.id());
    Ok(layout(&app.frame(&headers, &title, Nav::Overview, n.text()), body).into_response())
}

/// The task page's history of attempts: its failed attempts from the record's `attempt_log`
/// (the last 10), then the run in progress or the last run (from `attempts`, `started_at`,
/// `worker`, `finished_at`), when the record says one started.
fn attempts(
    app: &App,
    d: &scheduler_core::TaskDetail,
    failed: &[scheduler_core::FailedAttempt],
    now: i64,
) -> Markup {
    let p = app.p();
    let info = d.info.as_ref();
    let field = |f: &str| {
        d.fields
            .get(f)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    // The last run, when it is not in the log: running, or ended without failing (a task
    // waiting for a retry, or dead, has its last run as the log's last entry), and started
    // after the last failure was logged (a requeue resets `attempts`, not the log).
    let started = field("started_at");
    let current = info.filter(|i| {
        matches!(
            i.state,
            TaskState::Running | TaskState::Succeeded | TaskState::Cancelled
        ) && i.attempts > 0
            && failed
                .last()
                .is_none_or(|f| started.is_some_and(|s| s >= f.failed_at))
    });
    let older = failed.first().map_or(0, |f| f.attempt.saturating_sub(1));
    html! {
        section.card #attempts {
            h2 { "Attempts" }
            @if failed.is_empty() && current.is_none() {
                p.muted { "No run has started yet." }
            } @else {
                table.grid {
                    thead { tr { th { "#" } th { "outcome" } th { "started" } th { "ended" } th { "worker" } th { "error" } } }
                    tbody {
                        @for f in failed {
                            tr.attempt data-attempt=(f.attempt) {
                                td { (f.attempt) }
                                td { span.badge.bad { "failed" } }
                                td { @match f.started_at { Some(t) => (when(t, now)), None => span.muted { "?" } } }
                                td { (when(f.failed_at, now)) }
                                td { code { (f.worker) } }
                                td { pre.error { (f.error) } }
                            }
                        }
                        @if let Some(i) = current {
                            tr.attempt data-attempt=(i.attempts) {
                                td { (i.attempts) }
                                td { span class={ "badge state " (i.state) } { (i.state) } }
                                td { @match started { Some(t) => (when(t, now)), None => span.muted { "?" } } }
                                td { @match i.finished_at_ms { Some(t) => (when(t, now)), None => span.muted { "—" } } }
                                td { code { (i.worker.as_deref().unwrap_or("")) } }
                                td { @if i.state == TaskState::Cancelled { @if let Some(e) = &i.last_error { pre.error { (e) } } } }
                            }
                        }
                    }
                }
            }
            p.muted {
                "Failed attempts come from the record's " code { "attempt_log" } " (the last 10, errors cut to 200 bytes; the full last error is the "
                code { "error" } " field above)."
                @if older > 0 { " " (older) " earlier attempt(s) are not kept." }
                @if app.config.has_history() {
                    " Finished runs are also in the " a href={ (p) "/history?id=" (enc(d.id.id())) "&queue=" (enc(d.id.queue())) } { "history archive" } "."
                }
            }
        }
    }
}

/// The query of an action: where to go back to.
#[derive(Debug, Deserialize)]
pub(crate) struct Back {
    back: Option<String>,
}

/// Where to go after an action: `back` when it is a page of this dashboard, else `fallback`.
fn back_to(app: &App, back: Option<&str>, fallback: String, done: &str) -> Response {
    let p = app.p();
    let target = match back {
        Some(b)
            if b.starts_with(&format!("{p}/")) && !b.starts_with("//") && !b.contains("://") =>
        {
            b.to_owned()
        }
        _ => fallback,
    };
    let sep = if target.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{target}{sep}done={done}")).into_response()
}

/// `POST /tasks/{queue}/{id}/{cancel|requeue|delete}`.
pub(crate) async fn task_action(
    State(app): State<Arc<App>>,
    Path((queue, id, act)): Path<(String, String, String)>,
    Query(b): Query<Back>,
) -> Page {
    let id = task_id(&queue, &id).map_err(|e| app.fail(e))?;
    let i = &app.inspector;
    let p = app.p();
    let done = match act.as_str() {
        "cancel" => match i.cancel(&id).await.map_err(|e| app.fail(e))? {
            scheduler_core::Cancellation::Requested => "cancel-requested",
            _ => "cancelled",
        },
        "requeue" => {
            if !i.requeue(&id).await.map_err(|e| app.fail(e))? {
                return Err(app.fail(PageError::Conflict(format!(
                    "Task {id} is not dead: nothing changed."
                ))));
            }
            "requeued"
        }
        "delete" => {
            i.delete(&id).await.map_err(|e| app.fail(e))?;
            // The task page is gone: back to the queue.
            let fallback = queue_href(p, id.queue());
            return Ok(back_to(&app, b.back.as_deref(), fallback, "deleted"));
        }
        other => {
            return Err(app.fail(PageError::NotFound(format!(
                "No action {other:?}: use cancel, requeue or delete."
            ))))
        }
    };
    Ok(back_to(&app, b.back.as_deref(), task_href(p, &id), done))
}

/// `GET /queues/{queue}/requeue-dead`: asks before requeueing every dead task.
pub(crate) async fn requeue_dead_confirm(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Page {
    let counts = app.inspector.queue(&queue).await.map_err(|e| app.fail(e))?;
    let p = app.p();
    let dead = counts.total.dead;
    let body = html! {
        section.card.confirm {
            h1 { "Requeue every dead task of " code { (queue) } "?" }
            p { (count(dead)) " dead tasks go back to their ready set with attempts reset to 0; their last error is kept. Workers start running them at once." }
            @if app.can_act() {
                form method="post" action={ (queue_href(p, &queue)) "/requeue-dead" } {
                    input type="hidden" name="confirm" value="yes";
                    button.primary #confirm type="submit" { "Requeue " (count(dead)) " tasks" }
                    " "
                    a.button href={ (queue_href(p, &queue)) "/dead" } { "Keep them dead" }
                }
            } @else {
                p.muted { "This dashboard is read-only." }
            }
        }
    };
    Ok(layout(
        &app.frame(&headers, "Requeue all dead", Nav::Overview, None),
        body,
    )
    .into_response())
}

/// The form confirming a bulk action.
#[derive(Debug, Deserialize)]
pub(crate) struct Confirm {
    confirm: Option<String>,
}

/// `POST /queues/{queue}/requeue-dead` with `confirm=yes`.
pub(crate) async fn requeue_dead(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Form(c): Form<Confirm>,
) -> Page {
    if c.confirm.as_deref() != Some("yes") {
        return Err(app.fail(PageError::BadRequest(
            "Not confirmed: send confirm=yes (the confirmation page does).".to_owned(),
        )));
    }
    let tally = app
        .inspector
        .requeue_dead(&queue, None)
        .await
        .map_err(|e| app.fail(e))?;
    tracing::info!(
        queue,
        requeued = tally.requeued,
        "dashboard: requeued every dead task"
    );
    let target = format!("{}/dead", queue_href(app.p(), &queue));
    Ok(back_to(&app, None, target, "requeued-all"))
}

// ---------------------------------------------------------------------------------------------
// Workers, schedules, features to come

/// `GET /workers`: live workers from their heartbeats.
pub(crate) async fn workers(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let i = &app.inspector;
    let workers = i.workers().await.map_err(|e| app.fail(e))?;
    let now = i.server_time_ms().await.map_err(|e| app.fail(e))?;
    let dash = || "–".to_owned();
    let body = html! {
        div.heading { h1 { "Workers" } span.muted { (workers.len()) " live" } }
        @if workers.is_empty() {
            section.card.empty { p { "No live worker: none has sent a heartbeat recently." } }
        } @else {
            table.grid #workers {
                thead { tr {
                    th { "Worker" } th.num { "PID" } th { "Queues" } th.num { "Concurrency" }
                    th.num { "In flight" } th.num { "Succeeded" } th.num { "Failed" } th { "Started" } th { "Heartbeat expires" }
                } }
                tbody {
                    @for w in &workers {
                        tr {
                            td { code { (w.id) } }
                            td.num { (w.pid.map_or_else(dash, |v| v.to_string())) }
                            td { @for q in &w.queues { a.tag href=(queue_href(app.p(), q)) { (q) } " " } }
                            td.num { (w.concurrency.map_or_else(dash, |v| v.to_string())) }
                            td.num {
                                (w.running.map_or_else(dash, |v| v.to_string()))
                                @if let (Some(r), Some(c)) = (w.running, w.concurrency) {
                                    @if c > 0 { span.meter { span style={ "width:" (r * 100 / c) "%" } {} } }
                                }
                            }
                            td.num { (w.succeeded.map_or_else(dash, count)) }
                            td.num { (w.failed.map_or_else(dash, count)) }
                            td { @if let Some(s) = w.started_at_ms { (when(s, now)) } @else { "–" } }
                            td { "in " (span(w.ttl_ms.max(0) as u64)) }
                        }
                    }
                }
            }
            p.muted { "A worker's heartbeat names its host in its id; a worker missing here has stopped or lost Redis, and its leases expire to other workers." }
        }
    };
    Ok(layout(&app.frame(&headers, "Workers", Nav::Workers, None), body).into_response())
}

fn spec_text(s: &Spec) -> String {
    match s {
        Spec::Cron { expr, tz } => format!("cron {expr} ({tz})"),
        Spec::Every(d) => format!("every {}", span(d.as_millis() as u64)),
    }
}

/// `GET /schedules`: every periodic schedule with pause, resume and trigger.
pub(crate) async fn schedules(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Page {
    let list = app.schedules.list().await.map_err(|e| app.fail(e))?;
    let now = app
        .inspector
        .server_time_ms()
        .await
        .map_err(|e| app.fail(e))?;
    let p = app.p();
    let body = html! {
        div.heading { h1 { "Schedules" } span.muted { (list.len()) " schedules" } }
        @if list.is_empty() {
            section.card.empty { p { "No periodic schedule: declare one on a worker, or add one with " code { "schedctl schedules add" } "." } }
        } @else {
            table.grid #schedules {
                thead { tr {
                    th { "Schedule" } th { "When" } th { "Task" } th { "Queue" } th { "Next" } th { "Last" }
                    th.num { "Fired" } th.num { "Skipped" } th { "State" }
                    @if app.can_act() { th { "Actions" } }
                } }
                tbody {
                    @for s in &list {
                        tr data-schedule=(s.name) {
                            td { code { (s.name) } }
                            td { (spec_text(&s.spec)) }
                            td { (s.task) }
                            td { a href=(queue_href(p, &s.queue)) { (s.queue) } }
                            td { @if let Some(t) = s.next_ms { (when(t, now)) } @else { "–" } }
                            td {
                                @if let (Some(t), Some(id)) = (s.last_tick_ms, &s.last_id) { a href=(task_href(p, id)) { (when(t, now)) } }
                                @else { "–" }
                            }
                            td.num { (count(s.fired)) }
                            td.num { (count(s.skipped)) }
                            td { @if s.paused { span.badge.paused { "paused" } } @else { span.badge.ok { "active" } } }
                            @if app.can_act() {
                                td.actions {
                                    @let h = format!("{p}/schedules/{}", enc(&s.name));
                                    @if s.paused { (action(&format!("{h}/resume"), "Resume", "small", None)) }
                                    @else { (action(&format!("{h}/pause"), "Pause", "small", None)) }
                                    (action(&format!("{h}/trigger"), "Run now", "small", Some("Enqueue one run now?")))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        &app.frame(&headers, "Schedules", Nav::Schedules, n.text()),
        body,
    )
    .into_response())
}

/// `POST /schedules/{name}/{pause|resume|trigger}`.
pub(crate) async fn schedule_action(
    State(app): State<Arc<App>>,
    Path((name, act)): Path<(String, String)>,
) -> Page {
    let s = &app.schedules;
    let done = match act.as_str() {
        "pause" => s.pause(&name).await.map(|()| "paused"),
        "resume" => s.resume(&name).await.map(|()| "resumed"),
        "trigger" => s.trigger(&name).await.map(|_| "triggered"),
        other => {
            return Err(app.fail(PageError::NotFound(format!(
                "No action {other:?}: use pause, resume or trigger."
            ))))
        }
    }
    .map_err(|e| app.fail(e))?;
    Ok(back_to(&app, None, format!("{}/schedules", app.p()), done))
}

/// Query of `GET /limits`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct LimitsQuery {
    /// A keyed limit's family whose budget of `key` to show.
    family: Option<String>,
    /// The key (`TaskRequest::limit_key`) whose budget to show.
    key: Option<String>,
}

/// `x / n`, or a dash when the limit has no such part.
fn of_limit(used: Option<u64>, max: Option<u32>) -> Markup {
    match (used, max) {
        (Some(u), Some(n)) => html! { (u) span.muted { " / " (n) } },
        (Some(u), None) => html! { (u) },
        _ => html! { span.muted { "–" } },
    }
}

/// One row of usage figures: running, waiting, starts in the window.
fn usage_cells(u: &scheduler_core::limits::LimitUsage) -> Markup {
    let rate = u.limit.max_rate();
    html! {
        td.num.running { (of_limit(u.running, u.limit.max_concurrency())) }
        td.num.waiting { (of_limit(u.waiting, None)) }
        td.num.started {
            (of_limit(u.started, rate.map(|(n, _)| n)))
            @if let Some((_, per)) = rate { span.muted { " per " (format!("{per:?}")) } }
        }
    }
}

/// `GET /limits[?family=&key=]`: every flow-control limit in force (`<ns>:limits`, one
/// `HGETALL`) with what each task and queue limit holds now (`Inspector::limit_usage`: `TIME`
/// and at most three O(log n) reads per limit); a keyed limit's budget is looked up by key
/// (`Inspector::key_limit_usage`).
pub(crate) async fn limits(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<LimitsQuery>,
) -> Page {
    let all = app.inspector.limits().await.map_err(|e| app.fail(e))?;
    let usage = app.inspector.limit_usage().await.map_err(|e| app.fail(e))?;
    let families: Vec<&str> = all
        .iter()
        .filter_map(|(s, _)| match s {
            scheduler_core::limits::LimitScope::Key(f) => Some(f.as_str()),
            _ => None,
        })
        .collect();
    let key = q.key.as_deref().filter(|k| !k.is_empty());
    // The family asked for, or the only one there is.
    let family = q
        .family
        .as_deref()
        .filter(|f| !f.is_empty())
        .or(if families.len() == 1 {
            families.first().copied()
        } else {
            None
        });
    let looked_up = match (family, key) {
        (Some(f), Some(k)) => Some((
            f,
            app.inspector
                .key_limit_usage(f, k)
                .await
                .map_err(|e| app.fail(e))?,
        )),
        (None, Some(_)) => {
            return Err(app.fail(PageError::BadRequest(
                "key without family: give family=<key family> too".to_owned(),
            )))
        }
        _ => None,
    };
    let body = html! {
        div.heading { h1 { "Limits" } }
        @if all.is_empty() {
            section.card.empty {
                p { "No limit is set. Limits hold across every worker: at most N runs at once or N starts per period, per task name, queue or key (" code { "schedctl limits set key:tenant --concurrency 5" } ")." }
            }
        } @else {
            table.grid #limits {
                thead { tr { th { "Scope" } th { "Limit" } th.num { "Running" } th.num { "Waiting" } th.num { "Started in window" } } }
                tbody {
                    @for (scope, limit) in &all {
                        tr data-scope=(scope.field()) {
                            td { code { (scope.field()) } } td { (limit.to_string()) }
                            @match usage.iter().find(|u| &u.scope == scope) {
                                Some(u) => (usage_cells(u)),
                                None => td.muted colspan="3" { "one budget per key: look a key up below" },
                            }
                        }
                    }
                }
            }
            p.muted { "Running: runs holding a concurrency slot whose lease has not ended. Waiting: tasks parked until a slot frees. Started in window: starts within the rate limit's last period. A task a limit holds back waits in its partition's scheduled set; its " code { "limited" } " field names the limit." }
            @if !families.is_empty() {
                h2 { "Usage of one key" }
                form method="get" #key-lookup {
                    select name="family" {
                        @for f in &families {
                            option value=(f) selected[family == Some(*f)] { "key:" (f) }
                        }
                    }
                    input type="text" name="key" placeholder="key, e.g. tenant-42" value=[key];
                    button type="submit" { "Show" }
                }
                @match &looked_up {
                    None => {}
                    Some((f, None)) => section.card.empty { p.bad { "key:" (f) " has no limit." } },
                    Some((_, Some(u))) => table.grid #key-usage {
                        thead { tr { th { "Budget" } th { "Limit" } th.num { "Running" } th.num { "Waiting" } th.num { "Started in window" } } }
                        tbody {
                            tr data-scope=(u.label()) {
                                td { code { (u.label()) } } td { (u.limit.to_string()) } (usage_cells(u))
                            }
                        }
                    },
                }
            }
        }
    };
    Ok(layout(&app.frame(&headers, "Limits", Nav::Limits, None), body).into_response())
}

/// Query of `GET /workflows`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WorkflowQuery {
    /// The workflow to show.
    id: Option<String>,
}

/// `GET /workflows[?id=<workflow id>]`: a workflow's state and each member's (`Client::workflow`,
/// one `HGETALL`), looked up by id.
pub(crate) async fn workflows(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<WorkflowQuery>,
) -> Page {
    let found = match q.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => Some(app.client.workflow(id).await),
        None => None,
    };
    let p = app.p();
    let body = html! {
        div.heading { h1 { "Workflows" } }
        form method="get" {
            input type="text" name="id" placeholder="workflow id" value=[q.id.as_deref()];
            button type="submit" { "Show" }
        }
        @match &found {
            None => section.card.empty { p { "A workflow (chain, group or chord) by its id, as " code { "Client::start_workflow" } " returned it; also " code { "schedctl status <id>" } "." } },
            Some(Err(e)) => section.card.empty { p.bad { (e.to_string()) } },
            Some(Ok(wf)) => {
                dl.fields {
                    dt { "id" } dd { (wf.id) }
                    dt { "kind" } dd { (wf.kind) }
                    dt { "policy" } dd { (wf.policy) }
                    dt { "state" } dd { (wf.state) }
                    @if let Some(err) = &wf.error { dt { "error" } dd.bad { (err) } }
                    dt { "stage" } dd { (wf.current_stage) }
                    dt { "created" } dd { (iso_utc(wf.created_at_ms)) }
                }
                table.grid #members {
                    thead { tr { th.num { "Stage" } th.num { "#" } th { "Task" } th { "Outcome" } } }
                    tbody {
                        @for m in &wf.members {
                            tr {
                                td.num { (m.stage) } td.num { (m.index) }
                                td { a href=(task_href(p, &m.task)) { (m.task.to_string()) } }
                                td { @match &m.outcome { Some(o) => (format!("{o:?}")), None => span.muted { "–" } } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        &app.frame(&headers, "Workflows", Nav::Workflows, None),
        body,
    )
    .into_response())
}

/// Any other path: 404 inside the layout.
pub(crate) async fn not_found(State(app): State<Arc<App>>) -> Failure {
    app.fail(PageError::NotFound("No such page.".to_owned()))
}
