//! `export` and `import`: logical backups of tasks and schedules through
//! `scheduler::backup` (format and guarantees in `docs/storage.md`), with progress bars on
//! stderr (drawn only when stderr is a terminal).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scheduler::backup::{Exporter, Importer};
use serde_json::json;

use crate::{json_out, Ctx};

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} tasks, {{per_sec}}, eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// `export [--queue Q]... --out FILE [--batch N]`: writes `FILE.partial`, renamed to `FILE`
/// once the trailer is written, so that a failed export never leaves a file named as asked.
pub(crate) async fn export(
    ctx: &Ctx,
    queues: Vec<String>,
    out: &Path,
    batch: u32,
) -> Result<String> {
    let mut exporter = Exporter::new(&ctx.client).batch(batch);
    if !queues.is_empty() {
        exporter = exporter.queues(queues);
    }
    let pb = bar(exporter.count().await?, "export");
    let partial = out.with_extension(match out.extension() {
        Some(e) => format!("{}.partial", e.to_string_lossy()),
        None => "partial".to_owned(),
    });
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let report = exporter
        .export(BufWriter::new(file), |n| pb.set_position(n))
        .await;
    pb.finish_and_clear();
    let report = report?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    if ctx.json {
        return Ok(json_out(&json!({
            "file": out.display().to_string(),
            "tasks": report.tasks,
            "by_state": report.by_state,
            "schedules": report.schedules,
            "workflows": report.workflows,
            "duplicates_dropped": report.duplicates,
            "skipped": report.skipped,
            "bytes": report.bytes,
        })));
    }
    let states: Vec<String> = report
        .by_state
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    Ok(format!(
        "exported {} tasks ({}) and {} schedules{} to {} ({} bytes)\n",
        report.tasks,
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        },
        report.schedules,
        if report.workflows > 0 {
            format!(" and {} workflows", report.workflows)
        } else {
            String::new()
        },
        out.display(),
        report.bytes
    ))
}

/// A `QUEUE=N` shard count.
pub(crate) fn parse_shards(s: &str) -> Result<(String, u16), String> {
    let (q, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected QUEUE=SHARDS, got {s:?}"))?;
    let n: u16 = n.parse().map_err(|e| format!("{n:?}: {e}"))?;
    if n == 0 {
        return Err("a queue has at least 1 shard".to_owned());
    }
    Ok((q.to_owned(), n))
}

/// `import FILE [--shards QUEUE=N]...`: checks the whole file first (nothing is written from a
/// bad file), then imports it.
pub(crate) async fn import(ctx: &Ctx, path: &Path, shards: Vec<(String, u16)>) -> Result<String> {
    let open = || -> Result<BufReader<File>> {
        Ok(BufReader::new(
            File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let summary = Importer::verify(open()?)
        .map_err(|e| anyhow!("{}: {e}; nothing was imported", path.display()))?;
    let mut importer = Importer::new(&ctx.client);
    for (q, n) in shards {
        importer = importer.shards(q, n);
    }
    let pb = bar(summary.tasks, "import");
    let done = importer.import(open()?, |n| pb.set_position(n)).await;
    pb.finish_and_clear();
    let done = done?;
    if ctx.json {
        return Ok(json_out(&json!({
            "file": path.display().to_string(),
            "format_version": summary.version,
            "source_namespace": summary.header.namespace,
            "restored": done.restored,
            "existed": done.existed,
            "schedules": done.schedules,
            "schedules_existed": done.schedules_existed,
            "workflows": done.workflows,
            "workflows_existed": done.workflows_existed,
        })));
    }
    Ok(format!(
        "imported {}: {} tasks restored, {} already there; {} schedules added, {} already there{}\n",
        path.display(),
        done.restored,
        done.existed,
        done.schedules,
        done.schedules_existed,
        if done.workflows + done.workflows_existed > 0 {
            format!(
                "; {} workflows restored, {} already there",
                done.workflows, done.workflows_existed
            )
        } else {
            String::new()
        }
    ))
}
