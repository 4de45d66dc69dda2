//! Workflows' scripts (`docs/workflows.md`): `wf_create.lua` (a workflow's record), `wf_done.lua`
//! (a member finished: record it, say what comes next), both on the workflow's own slot, and
//! `wf_release.lua` (a held member made due), on the member's partition.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::reply::{array, bytes, int, protocol};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static WF_CREATE: LazyLock<Script> = script!("wf_create");
static WF_DONE: LazyLock<Script> = script!("wf_done");
static WF_RELEASE: LazyLock<Script> = script!("wf_release");

/// What `wf_done.lua` says comes next after a member finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WfNext {
    /// No such workflow (never created, or finished and expired): nothing to do.
    Gone,
    /// Other members of the stage have not finished yet.
    Wait,
    /// The workflow succeeded (its last stage completed).
    Succeeded,
    /// The workflow failed: these members (`queue/id`) have not finished; cancel them.
    Failed(Vec<String>),
    /// The stage completed: release the held members of stage `stage`.
    Release {
        /// The stage to release.
        stage: u32,
        /// Whether the completed stage is a group (its result is the list of its members').
        group: bool,
        /// Whether the policy is `continue` (a group's result lists `Ok`/`Err` outcomes).
        continue_on_error: bool,
        /// The completed stage's members' outcomes in order: `Ok(result)` or `Err(message)`.
        results: Vec<std::result::Result<Vec<u8>, String>>,
        /// The members to release: task id (`queue/id`), whether it receives the completed
        /// stage's result, its fixed arguments (MessagePack, when it receives).
        members: Vec<(String, bool, Vec<u8>)>,
    },
}

fn text(v: Value) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(v)?).into_owned())
}

impl Store {
    /// `wf_create.lua`: writes the record of workflow `id` from `fields` (name/value pairs)
    /// unless it exists; returns whether it was created.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn wf_create(&self, id: &str, fields: &[(String, Vec<u8>)]) -> Result<bool> {
        let mut inv = WF_CREATE.prepare_invoke();
        inv.key(self.keys.workflow(id));
        for (k, v) in fields {
            inv.arg(k).arg(&v[..]);
        }
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }

    /// `wf_done.lua`: records that member (`stage`, `index`) of workflow `id` finished with
    /// `outcome` (a result, or an error message), once; returns what comes next.
    ///
    /// # Errors
    ///
    /// A Redis error, [`crate::Error::Protocol`] for a reply of another shape.
    pub async fn wf_done(
        &self,
        id: &str,
        stage: u32,
        index: u32,
        outcome: std::result::Result<&[u8], &str>,
    ) -> Result<WfNext> {
        let mut inv = WF_DONE.prepare_invoke();
        inv.key(self.keys.workflow(id)).arg(stage).arg(index);
        match outcome {
            Ok(r) => inv.arg("ok").arg(r),
            Err(e) => inv.arg("err").arg(e),
        };
        let reply = self.run_script(&inv).await?;
        let shown = format!("{reply:?}");
        let bad = || protocol("wf_done reply", &Value::SimpleString(shown.clone()));
        let mut items = array(reply)?.into_iter();
        let tag = text(items.next().ok_or_else(bad)?)?;
        Ok(match tag.as_str() {
            "gone" => WfNext::Gone,
            "wait" => WfNext::Wait,
            "succeeded" => WfNext::Succeeded,
            "failed" => WfNext::Failed(items.map(text).collect::<Result<_>>()?),
            "release" => {
                let stage = int(&items.next().ok_or_else(bad)?)? as u32;
                let group = text(items.next().ok_or_else(bad)?)? == "1";
                let continue_on_error = text(items.next().ok_or_else(bad)?)? == "continue";
                let mut results = Vec::new();
                for r in array(items.next().ok_or_else(bad)?)? {
                    let mut r = array(r)?.into_iter();
                    let kind = text(r.next().ok_or_else(bad)?)?;
                    let payload = bytes(r.next().ok_or_else(bad)?)?;
                    results.push(if kind == "ok" {
                        Ok(payload)
                    } else {
                        Err(String::from_utf8_lossy(&payload).into_owned())
                    });
                }
                let mut members = Vec::new();
                for m in array(items.next().ok_or_else(bad)?)? {
                    let mut m = array(m)?.into_iter();
                    let id = text(m.next().ok_or_else(bad)?)?;
                    let receives = text(m.next().ok_or_else(bad)?)? == "1";
                    let fixed = bytes(m.next().ok_or_else(bad)?)?;
                    members.push((id, receives, fixed));
                }
                WfNext::Release {
                    stage,
                    group,
                    continue_on_error,
                    results,
                    members,
                }
            }
            _ => return Err(bad()),
        })
    }

    /// `wf_release.lua`: makes the held task `id` of `p` (due at `held_ms`) due now, its
    /// arguments replaced by `args` when given; returns whether it was held (`false`: released
    /// already, cancelled or gone, nothing changed).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn wf_release(
        &self,
        p: &Partition,
        id: &str,
        held_ms: i64,
        args: Option<&[u8]>,
    ) -> Result<bool> {
        let mut inv = WF_RELEASE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(id)
            .arg(held_ms);
        match args {
            Some(a) => inv.arg("1").arg(a),
            None => inv.arg("0").arg(""),
        };
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }
}
