//! `status <workflow id>`: a workflow's record and each member's task state
//! (docs/workflows.md).

use anyhow::{bail, Result};
use scheduler::workflow::{MemberOutcome, HELD_DUE_MS};
use serde_json::json;

use crate::render::{iso_utc, msgpack_text, pairs, Table};
use crate::{json_out, Ctx};

/// A member's task state as its record shows it: `held` for a task waiting for its stage,
/// `gone` for a record that expired or was deleted.
async fn task_state(ctx: &Ctx, task: &scheduler::TaskId) -> Result<String> {
    match ctx.client.status(task).await {
        Ok(t) if t.state == scheduler::TaskState::Scheduled && t.run_at_ms == HELD_DUE_MS => {
            Ok("held".to_owned())
        }
        Ok(t) => Ok(t.state.as_str().to_owned()),
        Err(scheduler::Error::NotFound(_)) => Ok("gone".to_owned()),
        Err(e) => Err(e.into()),
    }
}

/// `status <workflow id>` (an argument without `/`).
pub(crate) async fn status(ctx: &Ctx, id: &str) -> Result<String> {
    let info = match ctx.client.workflow(id).await {
        Err(e @ scheduler::Error::WorkflowNotFound(_)) => {
            bail!("{e} (never started, or its record expired after its TTL; a task is named <queue>/<id>)")
        }
        other => other?,
    };
    let mut states = Vec::with_capacity(info.members.len());
    for m in &info.members {
        states.push(task_state(ctx, &m.task).await?);
    }
    let outcome = |o: &Option<MemberOutcome>| match o {
        None => (String::new(), String::new()),
        Some(MemberOutcome::Succeeded(r)) => ("ok".to_owned(), msgpack_text(r)),
        Some(MemberOutcome::Failed(e)) => ("err".to_owned(), e.clone()),
    };
    if ctx.json {
        let members: Vec<_> = info
            .members
            .iter()
            .zip(&states)
            .map(|(m, s)| {
                let (o, v) = outcome(&m.outcome);
                json!({ "stage": m.stage, "index": m.index, "task": m.task.to_string(),
                        "task_state": s, "outcome": o, "value": v })
            })
            .collect();
        return Ok(json_out(&json!({
            "workflow": info.id, "kind": info.kind, "policy": info.policy,
            "state": info.state, "error": info.error, "current_stage": info.current_stage,
            "created_at": iso_utc(info.created_at_ms),
            "finished_at": info.finished_at_ms.map(iso_utc), "members": members,
        })));
    }
    let mut rows = vec![
        ("workflow".to_owned(), info.id.clone()),
        ("kind".to_owned(), info.kind.clone()),
        ("policy".to_owned(), info.policy.clone()),
        ("state".to_owned(), info.state.clone()),
        ("current_stage".to_owned(), info.current_stage.to_string()),
        ("created_at".to_owned(), iso_utc(info.created_at_ms)),
    ];
    if let Some(f) = info.finished_at_ms {
        rows.push(("finished_at".to_owned(), iso_utc(f)));
    }
    if let Some(e) = &info.error {
        rows.push(("error".to_owned(), e.clone()));
    }
    let mut out = pairs(&rows);
    let mut t = Table::new(&[
        "STAGE",
        "#",
        "TASK",
        "TASK STATE",
        "RECORDED",
        "RESULT / ERROR",
    ]);
    for (m, s) in info.members.iter().zip(&states) {
        let (o, v) = outcome(&m.outcome);
        t.row(vec![
            m.stage.to_string(),
            m.index.to_string(),
            m.task.to_string(),
            s.clone(),
            o,
            v,
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    Ok(out)
}
