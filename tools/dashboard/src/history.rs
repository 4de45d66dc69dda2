//! `GET /history`: finished attempts (succeeded, dead, cancelled, expired) of the namespace,
//! read from the task history archive in PostgreSQL through `scheduler_worker::archive::HistoryDb::query`, the
//! query `schedctl history` runs: filters by task id, name, queue, state and time range, newest first, paged by a cursor
//! (the last row's position in that order). With no archive configured
//! (`DashboardConfig::history`, feature `history`), the page
//! says so and how to turn it on.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use crate::view::{layout, Nav};
use crate::App;

/// The query of the history page; every field as typed in the filter form (empty: no filter).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(feature = "history"), allow(dead_code))]
pub(crate) struct HistoryParams {
    id: Option<String>,
    name: Option<String>,
    queue: Option<String>,
    state: Option<String>,
    /// Finished at or after: a duration before now (`30m`, `2h`, `7d`) or a UTC time
    /// (`2026-03-01T12:00`, `2026-03-01T12:00:29Z`).
    since: Option<String>,
    /// Finished before: the same forms.
    until: Option<String>,
    /// Where the page starts: the cursor the previous page's "Next page" link carries.
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /history`.
pub(crate) async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HistoryParams>,
) -> Response {
    #[cfg(feature = "history")]
    if let Some(db) = &app.config.history {
        return match enabled::page(&app, db, &headers, q).await {
            Ok(r) => r,
            Err(f) => f.into_response(),
        };
    }
    let _ = q;
    let body = html! {
        div.heading { h1 { "History" } }
        section.card.empty #history-off {
            p { "History is not configured: this dashboard reads no task history archive." }
            p.muted {
                "Finished tasks leave Redis after their result TTL. To search them here, run the "
                "archive (" code { "schedctl archive --database-url ..." } " or a worker with "
                code { "WorkerBuilder::archive" } "), then serve the dashboard with "
                code { "schedctl serve --database-url ..." } ", or mount it with "
                code { "DashboardConfig::history" } " (feature " code { "history" } "). "
                "See docs/dashboard.md and docs/storage.md."
            }
        }
    };
    layout(&app.frame(&headers, "History", Nav::History, None), body).into_response()
}

#[cfg(feature = "history")]
mod enabled {
    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Response};
    use maud::html;
    use scheduler_core::inspector::MAX_PAGE;
    use scheduler_worker::archive::{HistoryCursor, HistoryDb, HistoryQuery, HistoryRow};

    use super::HistoryParams;
    use crate::error::{Failure, PageError};
    use crate::pages::{enc, DEFAULT_PAGE};
    use crate::view::{layout, msgpack_json, utc, when, Nav};
    use crate::App;

    /// The states the archive holds.
    const STATES: [&str; 4] = ["succeeded", "dead", "cancelled", "expired"];

    fn bad(msg: String) -> PageError {
        PageError::BadRequest(msg)
    }

    /// A filter as typed: trimmed, empty is none.
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// `30m`, `2h`, `7d`... before `now`, or a UTC time: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]`
    /// (what a `datetime-local` field sends) taken as UTC.
    pub(super) fn parse_time(field: &str, s: &str, now: i64) -> Result<i64, PageError> {
        if let Some(ago) = parse_ago(s) {
            return Ok(now.saturating_sub(ago));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(t.timestamp_millis());
        }
        for f in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
                return Ok(t.and_utc().timestamp_millis());
            }
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(t.and_utc().timestamp_millis());
            }
        }
        Err(bad(format!(
            "{field} {s:?}: give a time in UTC (2026-03-01T12:00) or a span before now (30m, 2h, 7d)"
        )))
    }

    /// A span such as `90s`, `30m`, `2h`, `7d` in ms.
    fn parse_ago(s: &str) -> Option<i64> {
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = s.split_at(split);
        let n: i64 = num.parse().ok()?;
        let per = match unit {
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        n.checked_mul(per)
    }

    /// A cursor as the links carry it: `<finished ms>:<shard>:<stream id>:<queue>`.
    pub(super) fn cursor_text(c: &HistoryCursor) -> String {
        format!(
            "{}:{}:{}:{}",
            c.finished_at_ms, c.shard, c.stream_id, c.queue
        )
    }

    pub(super) fn parse_cursor(s: &str) -> Result<HistoryCursor, PageError> {
        let invalid = || bad(format!("cursor {s:?} is not one this page wrote"));
        let mut it = s.splitn(4, ':');
        let (Some(ms), Some(shard), Some(stream_id), Some(queue)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(invalid());
        };
        let ok_stream = stream_id
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
        if !ok_stream || scheduler_core::id::validate_queue(queue).is_err() {
            return Err(invalid());
        }
        Ok(HistoryCursor {
            finished_at_ms: ms.parse().map_err(|_| invalid())?,
            shard: shard.parse().map_err(|_| invalid())?,
            stream_id: stream_id.to_owned(),
            queue: queue.to_owned(),
        })
    }

    /// The search the parameters ask for, and the page size.
    fn search(app: &App, q: &HistoryParams, now: i64) -> Result<(HistoryQuery, usize), PageError> {
        let limit = match given(&q.limit) {
            None => DEFAULT_PAGE,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(bad(format!(
                        "limit {s:?}: use a number from 1 to {MAX_PAGE}"
                    )))
                }
            },
        };
        // One more row than shown: whether a next page exists.
        let mut h = HistoryQuery::new(&app.namespace).limit(limit as i64 + 1);
        if let Some(id) = given(&q.id) {
            scheduler_core::id::validate_id(id)?;
            h = h.id(id);
        }
        if let Some(name) = given(&q.name) {
            h = h.name(name);
        }
        if let Some(queue) = given(&q.queue) {
            scheduler_core::id::validate_queue(queue)?;
            h = h.queue(queue);
        }
        if let Some(st) = given(&q.state) {
            if !STATES.contains(&st) {
                return Err(bad(format!(
                    "state {st:?}: the history holds succeeded, dead, cancelled and expired"
                )));
            }
            h = h.state(st);
        }
        if let Some(s) = given(&q.since) {
            h = h.since_ms(parse_time("since", s, now)?);
        }
        if let Some(s) = given(&q.until) {
            h = h.until_ms(parse_time("until", s, now)?);
        }
        if let Some(c) = given(&q.after) {
            h = h.after(parse_cursor(c)?);
        }
        Ok((h, limit))
    }

    /// The page's own query string without the cursor: the filters, for the paging links.
    fn filters_query(q: &HistoryParams, limit: usize) -> String {
        let mut out = Vec::new();
        for (k, v) in [
            ("id", &q.id),
            ("name", &q.name),
            ("queue", &q.queue),
            ("state", &q.state),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = given(v) {
                out.push(format!("{k}={}", enc(v)));
            }
        }
        out.push(format!("limit={limit}"));
        out.join("&")
    }

    fn outcome(r: &HistoryRow) -> String {
        match (&r.error, &r.result) {
            (Some(e), _) => e.clone(),
            (None, Some(b)) => msgpack_json(b),
            _ => String::new(),
        }
    }

    pub(super) async fn page(
        app: &App,
        db: &HistoryDb,
        headers: &HeaderMap,
        q: HistoryParams,
    ) -> Result<Response, Failure> {
        let now = app
            .inspector
            .server_time_ms()
            .await
            .map_err(|e| app.fail(e))?;
        let (query, limit) = search(app, &q, now).map_err(|e| app.fail(e))?;
        let mut rows = db.query(&query).await.map_err(|e| app.fail(e))?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        if query.after.is_some() && rows.is_empty() {
            return Err(app.fail(PageError::NotFound(
                "This page is past the end of the history that matches.".to_owned(),
            )));
        }
        let p = app.p();
        let base = format!("{p}/history?{}", filters_query(&q, limit));
        let value = |v: &Option<String>| given(v).unwrap_or("").to_owned();
        let state = value(&q.state);
        let filtered = [&q.id, &q.name, &q.queue, &q.state, &q.since, &q.until]
            .into_iter()
            .any(|v| given(v).is_some());
        let body = html! {
            div.heading {
                h1 { "History" }
                span.muted { "finished attempts from the archive in PostgreSQL, newest first" }
            }
            form.card.filters #history-filters method="get" action={ (p) "/history" } {
                label { "Task id " input type="text" name="id" value=(value(&q.id)); }
                label { "Name " input type="text" name="name" value=(value(&q.name)); }
                label { "Queue " input type="text" name="queue" value=(value(&q.queue)); }
                label { "State "
                    select name="state" {
                        option value="" selected[state.is_empty()] { "any" }
                        @for s in STATES { option value=(s) selected[state == s] { (s) } }
                    }
                }
                label title="A UTC time (2026-03-01T12:00) or a span before now (30m, 2h, 7d)" {
                    "Since " input type="text" name="since" placeholder="2h or 2026-03-01T12:00" value=(value(&q.since));
                }
                label title="A UTC time (2026-03-01T12:00) or a span before now (30m, 2h, 7d)" {
                    "Until " input type="text" name="until" placeholder="UTC time or span" value=(value(&q.until));
                }
                input type="hidden" name="limit" value=(limit);
                button.primary type="submit" { "Search" }
                @if filtered { " " a.button href={ (p) "/history" } { "Clear" } }
            }
            @if rows.is_empty() {
                section.card.empty { p { "No finished attempt matches." } }
            } @else {
                table.grid #history {
                    thead { tr {
                        th { "Finished" } th { "Task" } th { "Name" } th { "State" } th.num { "Attempt" }
                        th { "Worker" } th { "Started" } th { "Result or error" }
                    } }
                    tbody {
                        @for r in &rows {
                            tr data-id=(r.task_id) data-state=(r.state) {
                                td { (when(r.finished_at_ms, now)) br; span.muted { (utc(r.finished_at_ms)) } }
                                td {
                                    a href={ (p) "/history?id=" (enc(&r.task_id)) "&queue=" (enc(&r.queue)) } title="Every archived attempt of this task" {
                                        code { (r.task_id) }
                                    }
                                    br; span.muted { (r.queue) " · shard " (r.shard) }
                                }
                                td { (r.name) }
                                td { span class={ "badge state " (r.state) } { (r.state) } }
                                td.num { (r.attempt) }
                                td { @if let Some(w) = &r.worker { code { (w) } } @else { "–" } }
                                td { @if let Some(s) = r.started_at_ms { (when(s, now)) } @else { "–" } }
                                td {
                                    details {
                                        summary class=@if r.error.is_some() { "error" } { (clip(&outcome(r))) }
                                        h4 { "Arguments" }
                                        pre.json { (msgpack_json(&r.args)) }
                                        @if let Some(e) = &r.error { h4 { "Error" } pre.error { (e) } }
                                        @if let Some(b) = &r.result { h4 { "Result" } pre.json { (msgpack_json(b)) } }
                                        p.muted {
                                            @if let Some(e) = r.enqueued_at_ms { "enqueued " (utc(e)) " · " }
                                            "archived " (utc(r.archived_at_ms))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.pager {
                @if query.after.is_some() { a.button href=(base) { "First page" } }
                @if more {
                    @if let Some(last) = rows.last() {
                        a.button #next href={ (base) "&after=" (enc(&cursor_text(&last.cursor()))) } { "Next page →" }
                    }
                }
            }
        };
        Ok(layout(&app.frame(headers, "History", Nav::History, None), body).into_response())
    }

    fn clip(s: &str) -> String {
        if s.chars().count() > 80 {
            format!("{}…", s.chars().take(79).collect::<String>())
        } else if s.is_empty() {
            "–".to_owned()
        } else {
            s.to_owned()
        }
    }
}

#[cfg(all(test, feature = "history"))]
mod tests {
    use super::enabled::{cursor_text, parse_cursor, parse_time};

    /// Times: spans before now and UTC times; cursors round-trip; bad input is refused.
    #[test]
    fn times_and_cursors() {
        let now = 1_772_366_429_123;
        assert_eq!(parse_time("since", "2h", now).unwrap(), now - 7_200_000);
        assert_eq!(
            parse_time("since", "2026-03-01T12:00", now).unwrap(),
            1_772_366_400_000
        );
        assert_eq!(
            parse_time("since", "2026-03-01T12:00:29.123Z", now).unwrap(),
            now
        );
        assert_eq!(
            parse_time("until", "2026-03-01", now).unwrap(),
            1_772_323_200_000
        );
        assert!(parse_time("since", "yesterday", now).is_err());
        let c = parse_cursor("1772366429123:3:1772366429123-7:mail.eu").unwrap();
        assert_eq!((c.shard, c.queue.as_str()), (3, "mail.eu"));
        assert_eq!(cursor_text(&c), "1772366429123:3:1772366429123-7:mail.eu");
        for bad in ["", "x", "1:2:3", "1:2:nope:q", "a:2:1-0:q"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
