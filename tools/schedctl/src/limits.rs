//! `limits ls|set|rm`: the flow-control limits every worker holds (`docs/flow-control.md`).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use scheduler::limits::{Limit, LimitScope, LimitUsage};
use serde_json::json;

use crate::render::Table;
use crate::{json_out, render, Ctx};

/// `schedctl limits ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum LimitsCmd {
    /// Every limit in force: scope, limit, and what each task and queue limit holds now (runs
    /// holding a concurrency slot, tasks waiting for one, starts in the rate window).
    Ls {
        /// Also the budget of one key of a keyed limit, `<family>=<key>` (`tenant=acme`; the
        /// key may contain `=`); repeatable. Keyed limits keep one budget per key and no index
        /// of their keys, so they are read by key.
        #[arg(long = "key", value_name = "FAMILY=KEY")]
        keys: Vec<String>,
    },
    /// Declare (or replace) the limit of a scope; running workers read it at once.
    Set {
        /// `task:<name>`, `queue:<queue>` or `key:<family>` (one budget per key).
        scope: String,
        /// At most this many runs at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// At most this many starts per `--per`.
        #[arg(long)]
        rate: Option<u32>,
        /// The rate limit's period: `1s`, `500ms`, `1m` (a bare number is seconds).
        #[arg(long, default_value = "1s", value_parser = render::parse_duration)]
        per: u64,
    },
    /// Remove the limit of a scope.
    Rm {
        /// `task:<name>`, `queue:<queue>` or `key:<family>`.
        scope: String,
    },
}

fn scope_of(s: &str) -> Result<LimitScope> {
    match LimitScope::from_field(s) {
        Some(scope) => Ok(scope),
        None => bail!("{s:?} is not a scope: use task:<name>, queue:<queue> or key:<family>"),
    }
}

/// A figure of a limit, `-` when the limit has no such part.
fn figure(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

async fn ls(ctx: &Ctx, keys: &[String]) -> Result<String> {
    let all = ctx.inspector.limits().await?;
    let mut usage = ctx.inspector.limit_usage().await?;
    for fk in keys {
        let Some((family, key)) = fk.split_once('=') else {
            bail!("--key {fk:?}: use <family>=<key>, e.g. tenant=acme");
        };
        match ctx.inspector.key_limit_usage(family, key).await? {
            Some(u) => usage.push(u),
            None => bail!("key:{family} has no limit"),
        }
    }
    let of = |scope: &LimitScope| usage.iter().find(|u| &u.scope == scope && u.key.is_none());
    if ctx.json {
        let figures = |u: Option<&LimitUsage>| {
            json!({
                "running": u.and_then(|u| u.running),
                "waiting": u.and_then(|u| u.waiting),
                "started": u.and_then(|u| u.started),
            })
        };
        let limit_json = |l: &Limit| {
            json!({
                "concurrency": l.max_concurrency(),
                "rate": l.max_rate().map(|(n, _)| n),
                "per_ms": l.max_rate().map(|(_, p)| p.as_millis() as u64),
            })
        };
        let merge = |mut a: serde_json::Value, b: serde_json::Value| {
            if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
                a.extend(b);
            }
            a
        };
        let rows: Vec<_> = all
            .iter()
            .map(|(s, l)| {
                let row = merge(json!({ "scope": s.field() }), limit_json(l));
                merge(row, figures(of(s)))
            })
            .collect();
        let keyed: Vec<_> = usage
            .iter()
            .filter(|u| u.key.is_some())
            .map(|u| {
                let row = merge(
                    json!({ "scope": u.scope.field(), "key": u.key, "budget": u.label() }),
                    limit_json(&u.limit),
                );
                merge(row, figures(Some(u)))
            })
            .collect();
        return Ok(json_out(&json!({ "limits": rows, "keys": keyed })));
    }
    if all.is_empty() {
        return Ok("no limits\n".into());
    }
    let mut t = Table::new(&["SCOPE", "LIMIT", "RUNNING>", "WAITING>", "STARTED>"]);
    let mut keyed_scopes = false;
    for (s, l) in &all {
        let (running, waiting, started) = match of(s) {
            Some(u) => (figure(u.running), figure(u.waiting), figure(u.started)),
            None => {
                keyed_scopes = true;
                ("per key".into(), "per key".into(), "per key".into())
            }
        };
        t.row(vec![s.field(), l.to_string(), running, waiting, started]);
    }
    for u in usage.iter().filter(|u| u.key.is_some()) {
        t.row(vec![
            u.label(),
            u.limit.to_string(),
            figure(u.running),
            figure(u.waiting),
            figure(u.started),
        ]);
    }
    let mut out = t.render();
    if keyed_scopes && keys.is_empty() {
        out.push_str("(a keyed limit keeps one budget per key: --key <family>=<key> reads one)\n");
    }
    Ok(out)
}

pub(crate) async fn run(ctx: &Ctx, cmd: LimitsCmd) -> Result<String> {
    match cmd {
        LimitsCmd::Ls { keys } => ls(ctx, &keys).await,
        LimitsCmd::Set {
            scope,
            concurrency,
            rate,
            per,
        } => {
            let scope = scope_of(&scope)?;
            let mut limit = None;
            if let Some(n) = concurrency {
                limit = Some(Limit::concurrency(n)?);
            }
            if let Some(n) = rate {
                let per = Duration::from_millis(per);
                limit = Some(match limit {
                    Some(l) => l.and_rate(n, per)?,
                    None => Limit::rate(n, per)?,
                });
            }
            let Some(limit) = limit else {
                bail!("give --concurrency N, --rate N [--per 1s], or both");
            };
            let new = ctx.inspector.set_limit(&scope, limit).await?;
            if ctx.json {
                return Ok(json_out(
                    &json!({ "scope": scope.field(), "limit": limit.encode(), "new": new }),
                ));
            }
            Ok(format!("{}: {limit}\n", scope.field()))
        }
        LimitsCmd::Rm { scope } => {
            let scope = scope_of(&scope)?;
            let removed = ctx.inspector.remove_limit(&scope).await?;
            if ctx.json {
                return Ok(json_out(
                    &json!({ "scope": scope.field(), "removed": removed }),
                ));
            }
            Ok(if removed {
                format!("removed the limit of {}\n", scope.field())
            } else {
                format!("{} had no limit\n", scope.field())
            })
        }
    }
}
