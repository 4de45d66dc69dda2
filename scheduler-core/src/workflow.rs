//! Workflows: [`chain`], [`group`] and [`chord`] of tasks, typed, durable in Redis
//! (`docs/workflows.md` has the design and the exactly-once argument).
//!
//! A workflow is a list of *stages*; a stage is one task (a chain step, a chord's callback) or a
//! group of tasks running in parallel. Stage `k + 1` starts when every member of stage `k`
//! succeeded; a member that *receives* gets the previous stage's result appended to its
//! arguments (a group's result is the list of its members' results, in order).
//!
//! Every member's task is created when the workflow starts: the first stage's due now, the
//! others *held* (due at [`HELD_DUE_MS`], far in the future) until their stage is released. The
//! workflow's record (`<ns>:wf:{<id>}`) lives in its own Cluster slot; no script touches it
//! and a member's partition at once. A member carries the header [`WORKFLOW_HEADER`]; the
//! worker that ran it records its outcome in the workflow (`wf_done.lua`, once per member)
//! and releases or cancels what follows *before* it writes the member's verdict, so a worker
//! killed in between leaves the member to run again and repeat those idempotent steps.
//!
//! # Examples
//!
//! ```no_run
//! use scheduler_core::workflow::{chain, chord, group, Partial};
//! use scheduler_core::{Client, Task, TaskContext, TaskError};
//!
//! struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//!     async fn run(_: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> { Ok(a + b) }
//! }
//! struct Sum;
//! impl Task for Sum {
//!     const NAME: &'static str = "sum";
//!     type Args = (Vec<i64>,);
//!     type Output = i64;
//!     async fn run(_: TaskContext, (v,): (Vec<i64>,)) -> Result<i64, TaskError> {
//!         Ok(v.iter().sum())
//!     }
//! }
//!
//! # async fn demo(client: &Client) -> Result<(), scheduler_core::Error> {
//! use std::time::Duration;
//! // add(1, 2), then add(10, <its result>): 13.
//! let wf = chain(Add::call((1, 2))).then_with(Partial::<Add, _>::new((10,))).build()?;
//! let handle = client.start_workflow(wf).await?;
//! let n: i64 = client.wait_workflow(&handle, Duration::from_secs(10)).await?;
//! assert_eq!(n, 13);
//!
//! // add(1, 1), add(2, 2), add(3, 3) in parallel, then sum([2, 4, 6]) = 12.
//! let adds = group((1..=3).map(|i| Add::call((i, i))));
//! let wf = chord(adds, Partial::<Sum, _>::new(())).build()?;
//! let handle = client.start_workflow(wf).await?;
//! assert_eq!(client.wait_workflow(&handle, Duration::from_secs(10)).await?, 12);
//! # Ok(()) }
//! ```
//!
//! # Types that do not line up do not compile
//!
//! A step receiving an `i64` whose task takes a `String`:
//!
//! ```compile_fail
//! # use scheduler_core::workflow::{chain, Partial};
//! # use scheduler_core::{Task, TaskContext, TaskError};
//! # struct Add;
//! # impl Task for Add {
//! #     const NAME: &'static str = "add";
//! #     type Args = (i64, i64);
//! #     type Output = i64;
//! #     async fn run(_: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> { Ok(a + b) }
//! # }
//! struct Shout;
//! impl Task for Shout {
//!     const NAME: &'static str = "shout";
//!     type Args = (String,);
//!     type Output = String;
//!     async fn run(_: TaskContext, (s,): (String,)) -> Result<String, TaskError> { Ok(s) }
//! }
//! let wf = chain(Add::call((1, 2))).then_with(Partial::<Shout, _>::new(()));
//! ```
//!
//! A chord callback taking `Vec<i64>` under [`Continue`], which passes
//! `Vec<Result<i64, String>>`:
//!
//! ```compile_fail
//! # use scheduler_core::workflow::{chord, group, Partial};
//! # use scheduler_core::{Task, TaskContext, TaskError};
//! # struct Add;
//! # impl Task for Add {
//! #     const NAME: &'static str = "add";
//! #     type Args = (i64, i64);
//! #     type Output = i64;
//! #     async fn run(_: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> { Ok(a + b) }
//! # }
//! # struct Sum;
//! # impl Task for Sum {
//! #     const NAME: &'static str = "sum";
//! #     type Args = (Vec<i64>,);
//! #     type Output = i64;
//! #     async fn run(_: TaskContext, (v,): (Vec<i64>,)) -> Result<i64, TaskError> {
//! #         Ok(v.iter().sum())
//! #     }
//! # }
//! let adds = group((1..=3).map(|i| Add::call((i, i)))).continue_on_error();
//! let wf = chord(adds, Partial::<Sum, _>::new(()));
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::client::{Client, TaskCall, TaskRequest};
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::info::TaskState;
use crate::scripts::Due;
use crate::store::WfNext;
use crate::task::Task;

/// The due time (unix ms, 2286-11-20) of a member held until its stage is released: the task
/// sits in its partition's scheduled set with this score, and only `wf_release.lua` moves it.
pub const HELD_DUE_MS: i64 = 9_999_999_999_999;

/// The header a workflow member carries: `<workflow id>:<stage>:<position>`. A task without it
/// costs the worker nothing more; one with it gets its outcome recorded in the workflow.
pub const WORKFLOW_HEADER: &str = "scheduler-workflow";

/// Most members a workflow may have (every stage together).
pub const MAX_MEMBERS: usize = 5_000;

/// How long a finished workflow's record is kept by default: 7 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A failure policy, chosen by type: [`FailFast`] (the default) or [`Continue`].
pub trait Policy: sealed::Sealed + Send + 'static {
    /// What a group's result lists for each member under this policy.
    type Item<T>;
    /// The policy's name in the workflow record.
    const NAME: &'static str;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::FailFast {}
    impl Sealed for super::Continue {}
}

/// Fail the whole workflow when a member fails for good: the members that have not finished are
/// cancelled (the held ones never run), the callback does not run, the workflow's state is
/// `failed` with the member's error. A group's result lists its members' results.
#[derive(Debug)]
pub enum FailFast {}

/// A group's member that fails for good does not fail the workflow: the group's result lists
/// `Ok(result)` or `Err(error message)` for each member, and a chord's callback receives that
/// list. A failing single step (a chord's callback) still fails the workflow.
#[derive(Debug)]
pub enum Continue {}

impl Policy for FailFast {
    type Item<T> = T;
    const NAME: &'static str = "fail";
}

impl Policy for Continue {
    type Item<T> = std::result::Result<T, String>;
    const NAME: &'static str = "continue";
}

/// Arguments given ahead of a result: a tuple `F` that, with the result `L` appended, is the
/// task's argument tuple `Out`. Implemented for tuples of up to 6 elements.
pub trait AppendArg<L> {
    /// The tuple with `L` appended.
    type Out;
}

macro_rules! append_arg {
    ($($t:ident),*) => {
        impl<L, $($t),*> AppendArg<L> for ($($t,)*) {
            type Out = ($($t,)* L,);
        }
    };
}
append_arg!();
append_arg!(A);
append_arg!(A, B);
append_arg!(A, B, C);
append_arg!(A, B, C, D);
append_arg!(A, B, C, D, E);
append_arg!(A, B, C, D, E, G);

/// A call of task `T` missing its last argument, which the previous stage's result fills in:
/// `fixed` are the arguments before it (`()` when the result is the only one).
///
/// `Partial::<T, _>::new(fixed)` type-checks only through [`Chain::then_with`],
/// [`Chain::then_group_with`] and [`chord`], which require `fixed` plus the result to be exactly `T::Args`.
#[derive(Debug)]
pub struct Partial<T: Task, F> {
    fixed: F,
    req: TaskRequest,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task, F: serde::Serialize> Partial<T, F> {
    /// `T` with these leading arguments and `T`'s default options.
    pub fn new(fixed: F) -> Self {
        let mut req = TaskRequest::from_encoded(T::NAME, T::QUEUE, Vec::new());
        req.max_retries = T::MAX_RETRIES;
        req.timeout = T::TIMEOUT;
        req.priority = T::PRIORITY;
        Self {
            fixed,
            req,
            _task: PhantomData,
        }
    }

    /// See [`TaskRequest::queue`].
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.req = self.req.queue(queue);
        self
    }

    /// See [`TaskRequest::max_retries`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.req = self.req.max_retries(n);
        self
    }

    /// See [`TaskRequest::timeout`].
    pub fn timeout(mut self, t: Duration) -> Self {
        self.req = self.req.timeout(t);
        self
    }

    /// See [`TaskRequest::priority`].
    pub fn priority(mut self, p: u8) -> Self {
        self.req = self.req.priority(p);
        self
    }

    /// See [`TaskRequest::header`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.req = self.req.header(name, value);
        self
    }

    fn into_member(self) -> Result<Member> {
        let mut req = self.req;
        req.args = crate::client::encode_args(&self.fixed)?;
        if split_array(&req.args).is_none() {
            return Err(Error::InvalidWorkflow(format!(
                "the fixed arguments of a step of task {:?} are not a tuple",
                req.name
            )));
        }
        Ok(Member {
            req,
            receives: true,
        })
    }
}

/// One member: its request (for a receiving one, the fixed arguments) and whether it receives
/// the previous stage's result.
#[derive(Debug, Clone)]
struct Member {
    req: TaskRequest,
    receives: bool,
}

/// One stage: a single task, or a group.
#[derive(Debug, Clone)]
struct Stage {
    group: bool,
    members: Vec<Member>,
}

/// A workflow ready to start with [`Client::start_workflow`]; its result is an `O`.
#[derive(Debug)]
pub struct Workflow<O> {
    kind: &'static str,
    policy: &'static str,
    stages: Vec<Stage>,
    id: Option<String>,
    ttl: Duration,
    headers: crate::headers::Headers,
    _out: PhantomData<fn() -> O>,
}

impl<O> Workflow<O> {
    /// Adds header `name` to every member (over a member's own header of that name): metadata
    /// such as a tenant or request id that every step of the workflow carries, as
    /// [`TaskRequest::header`] gives one task.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Use this workflow id instead of a generated one (1-64 of `A-Z a-z 0-9 _ - .`): starting
    /// the same id again creates nothing new, so a producer may retry a start whose reply it
    /// lost. Checked by [`Client::start_workflow`] ([`Error::InvalidWorkflow`]).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How long the record is kept once the workflow finished (default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn new(kind: &'static str, policy: &'static str, stages: Vec<Stage>) -> Result<Self> {
        let members: usize = stages.iter().map(|s| s.members.len()).sum();
        if stages.iter().any(|s| s.members.is_empty()) {
            return Err(Error::InvalidWorkflow(
                "a group without members (its result could never be complete)".into(),
            ));
        }
        if members > MAX_MEMBERS {
            return Err(Error::InvalidWorkflow(format!(
                "{members} members, more than {MAX_MEMBERS}"
            )));
        }
        for m in stages.iter().skip(1).flat_map(|s| &s.members) {
            if m.req.expires.is_some() {
                return Err(Error::InvalidWorkflow(format!(
                    "a member of task {:?} after the first stage has a deadline: it is held until its stage starts",
                    m.req.name
                )));
            }
        }
        for m in stages.iter().flat_map(|s| &s.members) {
            if m.req.unique.is_some() || m.req.id.is_some() {
                return Err(Error::InvalidWorkflow(format!(
                    "a member of task {:?} has its own id or unique option: members get the workflow's ids",
                    m.req.name
                )));
            }
        }
        Ok(Self {
            kind,
            policy,
            stages,
            id: None,
            ttl: DEFAULT_TTL,
            headers: crate::headers::Headers::new(),
            _out: PhantomData,
        })
    }
}

/// A chain of steps, each started when the previous one succeeded; its result is the last
/// step's, an `O`. Built by [`chain`].
#[derive(Debug)]
pub struct Chain<O> {
    stages: Result<Vec<Stage>>,
    _out: PhantomData<fn() -> O>,
}

/// A chain starting with `first`.
pub fn chain<T: Task>(first: TaskCall<T>) -> Chain<T::Output> {
    Chain {
        stages: first.into_request().map(|req| {
            vec![Stage {
                group: false,
                members: vec![Member {
                    req,
                    receives: false,
                }],
            }]
        }),
        _out: PhantomData,
    }
}

/// A chain starting with the members of `first` in parallel: what follows starts when every one
/// of them succeeded, and receives (through [`Chain::then_with`]) the list of their results in
/// member order. A chain's groups are fail-fast: a member that fails for good fails the chain.
pub fn chain_group<T>(first: Group<T, FailFast>) -> Chain<Vec<T>> {
    Chain {
        stages: first.stage().map(|g| vec![g]),
        _out: PhantomData,
    }
}

impl<O> Chain<O> {
    fn push<P>(self, member: Result<Member>) -> Chain<P> {
        self.push_stage(member.map(|m| Stage {
            group: false,
            members: vec![m],
        }))
    }

    fn push_stage<P>(self, stage: Result<Stage>) -> Chain<P> {
        Chain {
            stages: self.stages.and_then(|mut s| {
                s.push(stage?);
                Ok(s)
            }),
            _out: PhantomData,
        }
    }

    /// Then the members of `group` in parallel, none receiving the previous step's result; the
    /// chain's result so far becomes the list of their results in member order.
    pub fn then_group<T>(self, group: Group<T, FailFast>) -> Chain<Vec<T>> {
        self.push_stage(group.stage())
    }

    /// Then `steps` in parallel, each receiving the previous step's result as its last argument
    /// (the same value for every one: a fan-out); the chain's result so far becomes the list of
    /// their results in member order. It does not compile unless each step's fixed arguments
    /// plus an `O` are its task's arguments.
    pub fn then_group_with<T: Task, F>(
        self,
        steps: impl IntoIterator<Item = Partial<T, F>>,
    ) -> Chain<Vec<T::Output>>
    where
        F: serde::Serialize + AppendArg<O, Out = T::Args>,
    {
        let members: Result<Vec<Member>> = steps.into_iter().map(Partial::into_member).collect();
        self.push_stage(members.map(|members| Stage {
            group: true,
            members,
        }))
    }

    /// Then `call`, which does not receive the previous step's result.
    pub fn then<T: Task>(self, call: TaskCall<T>) -> Chain<T::Output> {
        self.push(call.into_request().map(|req| Member {
            req,
            receives: false,
        }))
    }

    /// Then `step`, which receives the previous step's result as its last argument: the
    /// chain does not compile unless `step`'s fixed arguments plus an `O` are its task's
    /// arguments.
    pub fn then_with<T: Task, F>(self, step: Partial<T, F>) -> Chain<T::Output>
    where
        F: serde::Serialize + AppendArg<O, Out = T::Args>,
    {
        self.push(step.into_member())
    }

    /// The workflow (fail-fast: a step that fails for good fails the chain and cancels the
    /// steps after it).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for arguments that cannot be encoded, [`Error::InvalidWorkflow`] (a
    /// group without members, too many members).
    pub fn build(self) -> Result<Workflow<O>> {
        Workflow::new("chain", FailFast::NAME, self.stages?)
    }
}

/// Members run in parallel; the result is the list of their results in order (under policy
/// `P`, see [`Continue`]). Built by [`group`].
#[derive(Debug)]
pub struct Group<T, P = FailFast> {
    members: Result<Vec<Member>>,
    _out: PhantomData<fn() -> (T, P)>,
}

/// A group of `calls`, all of one task.
pub fn group<T: Task>(calls: impl IntoIterator<Item = TaskCall<T>>) -> Group<T::Output> {
    Group {
        members: calls
            .into_iter()
            .map(|c| {
                c.into_request().map(|req| Member {
                    req,
                    receives: false,
                })
            })
            .collect(),
        _out: PhantomData,
    }
}

impl<T> Group<T, FailFast> {
    /// Policy [`Continue`]: a member that fails for good does not fail the group; the result
    /// lists `Ok` / `Err` per member.
    pub fn continue_on_error(self) -> Group<T, Continue> {
        Group {
            members: self.members,
            _out: PhantomData,
        }
    }
}

impl<T, P: Policy> Group<T, P> {
    fn stage(self) -> Result<Stage> {
        Ok(Stage {
            group: true,
            members: self.members?,
        })
    }

    /// The workflow of this group alone.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::InvalidWorkflow`] (no members, too many).
    pub fn build(self) -> Result<Workflow<Vec<P::Item<T>>>> {
        Workflow::new("group", P::NAME, vec![self.stage()?])
    }
}

/// A group, then a callback receiving the list of the group's results. Built by [`chord`].
#[derive(Debug)]
pub struct Chord<O> {
    stages: Result<Vec<Stage>>,
    policy: &'static str,
    _out: PhantomData<fn() -> O>,
}

/// A chord: `members`, then `callback` with the list of their results (in order) appended to its
/// arguments. It does not compile unless `callback`'s fixed arguments plus that list are its
/// task's arguments: `Vec<T>` under [`FailFast`], `Vec<Result<T, String>>` under [`Continue`].
pub fn chord<T, P: Policy, C: Task, F>(
    members: Group<T, P>,
    callback: Partial<C, F>,
) -> Chord<C::Output>
where
    F: serde::Serialize + AppendArg<Vec<P::Item<T>>, Out = C::Args>,
{
    let stages = members.stage().and_then(|g| {
        Ok(vec![
            g,
            Stage {
                group: false,
                members: vec![callback.into_member()?],
            },
        ])
    });
    Chord {
        stages,
        policy: P::NAME,
        _out: PhantomData,
    }
}

impl<O> Chord<O> {
    /// The workflow.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::InvalidWorkflow`] (no members, too many).
    pub fn build(self) -> Result<Workflow<O>> {
        Workflow::new("chord", self.policy, self.stages?)
    }
}

/// A started workflow: its id, and the type of its result.
#[derive(Debug, Clone)]
pub struct WorkflowHandle<O> {
    id: String,
    _out: PhantomData<fn() -> O>,
}

impl<O> WorkflowHandle<O> {
    /// A handle for the workflow `id` whose result is an `O` (for a process that did not start
    /// it).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            _out: PhantomData,
        }
    }

    /// The workflow's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// How a member ended, as the workflow recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOutcome {
    /// It succeeded with this result (MessagePack).
    Succeeded(Vec<u8>),
    /// It failed for good (dead, cancelled, expired) with this error.
    Failed(String),
}

/// One member of a workflow, as its record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its stage (0-based).
    pub stage: u32,
    /// Its position in the stage (0-based).
    pub index: u32,
    /// Its task.
    pub task: TaskId,
    /// How it ended, once the workflow recorded it; `None` while it has not.
    pub outcome: Option<MemberOutcome>,
}

/// A workflow's record ([`Client::workflow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    /// Its id.
    pub id: String,
    /// `chain`, `group` or `chord`.
    pub kind: String,
    /// `fail` (fail-fast) or `continue`.
    pub policy: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The stage running now (0-based).
    pub current_stage: u32,
    /// Creation time (unix ms, Redis clock).
    pub created_at_ms: i64,
    /// When it finished (unix ms, Redis clock).
    pub finished_at_ms: Option<i64>,
    /// Its members, stage by stage, in order.
    pub members: Vec<MemberInfo>,
    groups: Vec<bool>,
    /// The channel its end is published on (the record's `events` field), when it has one.
    events_channel: Option<String>,
}

impl WorkflowInfo {
    fn from_fields(id: &str, f: &HashMap<String, Vec<u8>>) -> Option<Self> {
        let s = |k: &str| f.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        let n = |k: &str| s(k).and_then(|v| v.parse::<i64>().ok());
        let stages = n("stages")? as u32;
        let mut members = Vec::new();
        let mut groups = Vec::new();
        for st in 0..stages {
            groups.push(s(&format!("g:{st}")).as_deref() == Some("1"));
            for i in 0..n(&format!("n:{st}")).unwrap_or(0) as u32 {
                let task = s(&format!("m:{st}:{i}"))?.parse().ok()?;
                let payload = f.get(&format!("r:{st}:{i}")).cloned().unwrap_or_default();
                let outcome = match s(&format!("x:{st}:{i}")).as_deref() {
                    Some("ok") => Some(MemberOutcome::Succeeded(payload)),
                    Some(_) => Some(MemberOutcome::Failed(
                        String::from_utf8_lossy(&payload).into_owned(),
                    )),
                    None => None,
                };
                members.push(MemberInfo {
                    stage: st,
                    index: i,
                    task,
                    outcome,
                });
            }
        }
        Some(Self {
            id: id.to_owned(),
            kind: s("kind").unwrap_or_default(),
            policy: s("policy").unwrap_or_default(),
            state: s("state")?,
            error: s("error"),
            current_stage: n("cur").unwrap_or(0) as u32,
            created_at_ms: n("created_at").unwrap_or(0),
            finished_at_ms: n("finished_at"),
            members,
            groups,
            events_channel: s("events"),
        })
    }

    /// The workflow's result (MessagePack) once it succeeded: its last stage's.
    fn result(&self) -> Vec<u8> {
        let last = self.groups.len().saturating_sub(1) as u32;
        let outcomes: Vec<std::result::Result<Vec<u8>, String>> = self
            .members
            .iter()
            .filter(|m| m.stage == last)
            .map(|m| match &m.outcome {
                Some(MemberOutcome::Succeeded(r)) => Ok(r.clone()),
                Some(MemberOutcome::Failed(e)) => Err(e.clone()),
                None => Ok(Vec::new()),
            })
            .collect();
        stage_output(
            self.groups.last().copied().unwrap_or(false),
            self.policy == Continue::NAME,
            &outcomes,
        )
    }
}

/// MessagePack: a result as stored (empty: nil, what a `()` result is).
fn value(r: &[u8]) -> &[u8] {
    if r.is_empty() {
        &[0xc0]
    } else {
        r
    }
}

/// MessagePack header of an array of `n` elements.
fn array_header(n: usize) -> Vec<u8> {
    if n < 16 {
        vec![0x90 | n as u8]
    } else if let Ok(n) = u16::try_from(n) {
        let mut v = vec![0xdc];
        v.extend_from_slice(&n.to_be_bytes());
        v
    } else {
        let mut v = vec![0xdd];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    }
}

/// An encoded tuple's element count and elements: an array, or nil (`()`, no elements).
fn split_array(b: &[u8]) -> Option<(usize, &[u8])> {
    match *b.first()? {
        0xc0 if b.len() == 1 => Some((0, &[])),
        h @ 0x90..=0x9f => Some(((h & 0x0f) as usize, &b[1..])),
        0xdc if b.len() >= 3 => Some((u16::from_be_bytes([b[1], b[2]]) as usize, &b[3..])),
        0xdd if b.len() >= 5 => Some((
            u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize,
            &b[5..],
        )),
        _ => None,
    }
}

/// The encoded tuple `fixed` with the encoded value `last` appended.
fn append(fixed: &[u8], last: &[u8]) -> Result<Vec<u8>> {
    let (n, body) = split_array(fixed).ok_or_else(|| {
        Error::InvalidWorkflow("a receiving member's fixed arguments are not a tuple".into())
    })?;
    let mut out = array_header(n + 1);
    out.extend_from_slice(body);
    out.extend_from_slice(last);
    Ok(out)
}

/// A stage's result (MessagePack) from its members' outcomes: a single member's result, or a
/// group's list (of `{"Ok": r}` / `{"Err": message}` maps under [`Continue`], as serde encodes a
/// `Result`).
fn stage_output(
    group: bool,
    continue_on_error: bool,
    outcomes: &[std::result::Result<Vec<u8>, String>],
) -> Vec<u8> {
    if !group {
        return match outcomes.first() {
            Some(Ok(r)) => value(r).to_vec(),
            _ => vec![0xc0],
        };
    }
    let mut out = array_header(outcomes.len());
    for o in outcomes {
        match (o, continue_on_error) {
            (Ok(r), false) => out.extend_from_slice(value(r)),
            (Ok(r), true) => {
                out.extend_from_slice(&[0x81, 0xa2, b'O', b'k']);
                out.extend_from_slice(value(r));
            }
            (Err(e), _) => {
                out.extend_from_slice(&[0x81, 0xa3, b'E', b'r', b'r']);
                out.extend_from_slice(&rmp_serde::to_vec(e).unwrap_or_else(|_| vec![0xc0]));
            }
        }
    }
    out
}

/// The result of a workflow whose record is `info`: decoded once it succeeded, `None` while it
/// runs, [`Error::WorkflowFailed`] once it failed.
fn finished<O: DeserializeOwned>(info: WorkflowInfo) -> Result<Option<O>> {
    match info.state.as_str() {
        "succeeded" => Ok(Some(rmp_serde::from_slice(&info.result())?)),
        "failed" => Err(Error::WorkflowFailed {
            id: info.id,
            error: info.error.unwrap_or_default(),
        }),
        _ => Ok(None),
    }
}

/// The workflow id, stage and position of a member from its [`WORKFLOW_HEADER`].
fn parse_header(h: &str) -> Option<(&str, u32, u32)> {
    let mut it = h.rsplitn(3, ':');
    let index = it.next()?.parse().ok()?;
    let stage = it.next()?.parse().ok()?;
    Some((it.next()?, stage, index))
}

/// Checks a workflow id: 1-64 of `A-Z a-z 0-9 _ - .` (no braces: the record's hash tag).
pub(crate) fn validate_workflow_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidWorkflow(format!(
            "workflow id {id:?}: use 1-64 characters of A-Z a-z 0-9 _ - ."
        )))
    }
}

impl Client {
    /// Starts `wf`: writes its record, creates every member's task (the first stage's due as
    /// its calls say, the others held), and returns its handle. Idempotent with a
    /// [`Workflow::id`]: starting it again completes a start that failed half-way and creates
    /// nothing twice.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWorkflow`] for a bad id, the errors of [`Client::enqueue_bulk`], or a
    /// Redis error. A start that failed after writing the record is finished by starting the
    /// same id again.
    pub async fn start_workflow<O>(&self, wf: Workflow<O>) -> Result<WorkflowHandle<O>> {
        let id = match wf.id {
            Some(id) => id,
            None => ulid::Ulid::new().to_string().to_lowercase(),
        };
        validate_workflow_id(&id)?;
        let mut fields: Vec<(String, Vec<u8>)> = vec![
            ("kind".into(), wf.kind.into()),
            ("policy".into(), wf.policy.into()),
            ("state".into(), b"running".to_vec()),
            ("stages".into(), wf.stages.len().to_string().into()),
            ("cur".into(), b"0".to_vec()),
            (
                "ttl_ms".into(),
                wf.ttl.as_millis().max(1).to_string().into(),
            ),
        ];
        // Its end is published (wf_done.lua) when every member's queue has task events on, so
        // that whichever member ends it, a queue with events pays for it.
        self.refresh_events_setting();
        let events_on = wf
            .stages
            .iter()
            .flat_map(|st| &st.members)
            .all(|m| self.store().events_on(&m.req.queue));
        if events_on {
            fields.push((
                "events".into(),
                self.store().keys().workflow_events_channel(&id).into(),
            ));
        }
        let mut stages = Vec::with_capacity(wf.stages.len());
        for (s, stage) in wf.stages.into_iter().enumerate() {
            fields.push((format!("n:{s}"), stage.members.len().to_string().into()));
            fields.push((format!("g:{s}"), if stage.group { "1" } else { "0" }.into()));
            let mut reqs = Vec::with_capacity(stage.members.len());
            for (i, m) in stage.members.into_iter().enumerate() {
                let mut req = m.req;
                let task = TaskId::new(&req.queue, format!("{id}.{s}.{i}"));
                fields.push((format!("m:{s}:{i}"), task.to_string().into()));
                if m.receives {
                    fields.push((format!("p:{s}:{i}"), b"1".to_vec()));
                    fields.push((format!("a:{s}:{i}"), req.args.clone()));
                }
                req.id = Some(task.id().to_owned());
                req.headers.extend(wf.headers.clone());
                req.insert_header(WORKFLOW_HEADER, format!("{id}:{s}:{i}"));
                if s > 0 {
                    req.due = Due::At(HELD_DUE_MS);
                }
                reqs.push(req);
            }
            stages.push(reqs);
        }
        self.retry(|| self.store().wf_create(&id, &fields)).await?;
        // The held stages first: once the first stage exists, everything it may release does.
        let first = stages.remove(0);
        let held: Vec<TaskRequest> = stages.into_iter().flatten().collect();
        if !held.is_empty() {
            self.enqueue_bulk(held).await?;
        }
        self.enqueue_bulk(first).await?;
        // Indexed for the sweep once every member exists: a sweep never finds a member missing
        // because the start has not created it yet.
        let index = self.store().keys().workflows();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.retry(|| {
            let mut conn = self.store().conn();
            let (index, id) = (index.clone(), id.clone());
            async move {
                redis::cmd("ZADD")
                    .arg(index)
                    .arg("NX")
                    .arg(created)
                    .arg(id)
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok(())
            }
        })
        .await?;
        Ok(WorkflowHandle::new(id))
    }

    /// The record of workflow `id`: its state and its members' recorded outcomes.
    ///
    /// # Errors
    ///
    /// [`Error::WorkflowNotFound`], or a Redis error.
    pub async fn workflow(&self, id: &str) -> Result<WorkflowInfo> {
        let fields: HashMap<String, Vec<u8>> = self.workflow_fields(id).await?;
        WorkflowInfo::from_fields(id, &fields).ok_or_else(|| Error::WorkflowNotFound(id.into()))
    }

    /// The fields of workflow `id`'s record as they are stored, read in one `HGETALL` (atomic),
    /// retried like every read; empty when there is no record.
    pub(crate) async fn workflow_fields<T: redis::FromRedisValue>(&self, id: &str) -> Result<T> {
        let key = self.store().keys().workflow(id);
        self.retry(|| {
            let mut conn = self.store().conn();
            let key = key.clone();
            async move {
                Ok(redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await?)
            }
        })
        .await
    }

    /// The workflow's result once it succeeded, decoded; `Ok(None)` while it runs.
    ///
    /// # Errors
    ///
    /// [`Error::WorkflowFailed`], [`Error::WorkflowNotFound`], [`Error::Decode`] when the
    /// result is not an `O`, or a Redis error.
    pub async fn workflow_result<O: DeserializeOwned>(
        &self,
        handle: &WorkflowHandle<O>,
    ) -> Result<Option<O>> {
        finished(self.workflow(handle.id()).await?)
    }

    /// Waits until the workflow finishes and returns its result. A workflow started while every
    /// member's queue had task events on is woken by its end (`wf_done.lua` publishes it on
    /// [`crate::keys::Keys::workflow_events_channel`]): it subscribes, reads the record, and
    /// then sends nothing until that message comes, reading again every
    /// [`crate::defaults::EVENTS_WAIT_RECHECK`] in case it was lost. Otherwise it reads the
    /// record every 5 ms at first, backing off to every 250 ms.
    ///
    /// # Errors
    ///
    /// [`Error::WorkflowTimeout`] after `timeout`, and the errors of
    /// [`Client::workflow_result`].
    pub async fn wait_workflow<O: DeserializeOwned>(
        &self,
        handle: &WorkflowHandle<O>,
        timeout: Duration,
    ) -> Result<O> {
        let deadline = tokio::time::Instant::now() + timeout;
        // The first read tells whether the workflow publishes its end.
        let info = self.workflow(handle.id()).await?;
        let channel = info.events_channel.clone();
        if let Some(r) = finished(info)? {
            return Ok(r);
        }
        if let Some(channel) = channel {
            match self.subscribe_channel(&channel).await {
                Ok(pubsub) => return self.wait_workflow_by_events(handle, pubsub, deadline).await,
                Err(e) => {
                    tracing::debug!(error = %e, "workflow end not subscribed; wait_workflow polls")
                }
            }
        }
        self.wait_workflow_by_polling(handle, deadline, true).await
    }

    /// [`Client::wait_workflow`] woken by the workflow's end, subscribed before this reads.
    async fn wait_workflow_by_events<O: DeserializeOwned>(
        &self,
        handle: &WorkflowHandle<O>,
        pubsub: redis::aio::PubSub,
        deadline: tokio::time::Instant,
    ) -> Result<O> {
        use futures::StreamExt;
        let mut ends = pubsub.into_on_message();
        loop {
            if let Some(r) = self.workflow_result(handle).await? {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::WorkflowTimeout(handle.id().to_owned()));
            }
            let recheck = now + crate::defaults::EVENTS_WAIT_RECHECK.min(deadline - now);
            match tokio::time::timeout_at(recheck, ends.next()).await {
                // Its end, or the recheck: read the record.
                Ok(Some(_)) | Err(_) => {}
                // The subscription was lost: poll until the end.
                Ok(None) => return self.wait_workflow_by_polling(handle, deadline, false).await,
            }
        }
    }

    /// [`Client::wait_workflow`] by reading the record every 5 ms, backing off to every 250 ms;
    /// `just_read`: the caller has just read it, so the first read comes after 5 ms.
    async fn wait_workflow_by_polling<O: DeserializeOwned>(
        &self,
        handle: &WorkflowHandle<O>,
        deadline: tokio::time::Instant,
        just_read: bool,
    ) -> Result<O> {
        let mut every = Duration::from_millis(5);
        let mut read = !just_read;
        loop {
            if read {
                if let Some(r) = self.workflow_result(handle).await? {
                    return Ok(r);
                }
            }
            read = true;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::WorkflowTimeout(handle.id().to_owned()));
            }
            tokio::time::sleep(every.min(deadline - now)).await;
            every = (every * 2).min(Duration::from_millis(250));
        }
    }

    /// Records that the workflow member whose [`WORKFLOW_HEADER`] is `header` finished with
    /// `outcome` (its result, or its error when it failed for good), and does what follows:
    /// releases the next stage when this one completed, cancels the members left when the
    /// workflow failed. Idempotent: the worker calls it before it writes the member's verdict,
    /// and a member that runs again calls it again. An unreadable header, or a workflow gone,
    /// is a no-op.
    ///
    /// # Errors
    ///
    /// A Redis error (the caller hands the member back, so that it runs again).
    pub async fn workflow_member_finished(
        &self,
        header: &str,
        outcome: std::result::Result<&[u8], &str>,
    ) -> Result<()> {
        let Some((wf, stage, index)) = parse_header(header) else {
            tracing::warn!(header, "unreadable workflow header ignored");
            return Ok(());
        };
        let next = self
            .retry(|| self.store().wf_done(wf, stage, index, outcome))
            .await?;
        self.follow(next).await
    }

    /// Does what `wf_done.lua` said comes next: idempotent steps on the members' partitions.
    async fn follow(&self, next: WfNext) -> Result<()> {
        match next {
            WfNext::Gone | WfNext::Wait | WfNext::Succeeded => Ok(()),
            WfNext::Failed(left) => {
                let cancels =
                    left.iter()
                        .filter_map(|t| t.parse::<TaskId>().ok())
                        .map(|t| async move {
                            match self.cancel_task(&t).await {
                                Ok(_) | Err(Error::NotFound(_) | Error::AlreadyFinished(_)) => {
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                        });
                futures::future::try_join_all(cancels).await.map(|_| ())
            }
            WfNext::Release {
                group,
                continue_on_error,
                results,
                members,
                ..
            } => {
                let input = stage_output(group, continue_on_error, &results);
                let releases = members.into_iter().map(|(task, receives, fixed)| {
                    let input = &input;
                    async move {
                        let task: TaskId = task.parse()?;
                        let args = if receives {
                            Some(append(&fixed, input)?)
                        } else {
                            None
                        };
                        let p = self.partition_of(&task).await?;
                        self.retry(|| {
                            self.store()
                                .wf_release(&p, task.id(), HELD_DUE_MS, args.as_deref())
                        })
                        .await
                    }
                });
                futures::future::try_join_all(releases).await.map(|_| ())
            }
        }
    }

    /// Repairs the unfinished workflows (the index `<ns>:workflows`, at most 1,000 per call,
    /// oldest first) whose progress a crash or an operator interrupted: a member of the current
    /// stage that ended without the workflow recording it (buried by a lease reap, expired,
    /// cancelled by hand, its record gone) is recorded now; a completed stage whose next stage
    /// was not released is released; a failed workflow's remaining members are cancelled.
    /// Finished workflows leave the index. Every step is idempotent, so any number of processes
    /// may sweep at once; workers sweep on every janitor round. Returns how many workflows it
    /// looked at.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn sweep_workflows(&self) -> Result<usize> {
        let index = self.store().keys().workflows();
        let ids: Vec<String> = self
            .retry(|| {
                let mut conn = self.store().conn();
                let index = index.clone();
                async move {
                    Ok(redis::cmd("ZRANGE")
                        .arg(index)
                        .arg(0)
                        .arg(999)
                        .query_async(&mut conn)
                        .await?)
                }
            })
            .await?;
        for id in &ids {
            let info = match self.workflow(id).await {
                Ok(info) => Some(info),
                Err(Error::WorkflowNotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let done = match &info {
                None => true,
                Some(info) if info.state == "running" => {
                    self.repair(info).await?;
                    false
                }
                Some(info) => {
                    if info.state == "failed" {
                        let left = info
                            .members
                            .iter()
                            .filter(|m| m.outcome.is_none())
                            .map(|m| m.task.to_string())
                            .collect();
                        self.follow(WfNext::Failed(left)).await?;
                    }
                    true
                }
            };
            if done {
                let mut conn = self.store().conn();
                redis::cmd("ZREM")
                    .arg(&index)
                    .arg(id)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        Ok(ids.len())
    }

    /// [`Client::sweep_workflows`] of one running workflow.
    async fn repair(&self, info: &WorkflowInfo) -> Result<()> {
        let cur = info.current_stage;
        // The stage before the current one completed: release the current one again (a no-op
        // for tasks released already).
        if let Some(m) = info.members.iter().find(|m| cur > 0 && m.stage == cur - 1) {
            let header = format!("{}:{}:{}", info.id, m.stage, m.index);
            self.workflow_member_finished(&header, Ok(&[])).await?;
        }
        for m in info
            .members
            .iter()
            .filter(|m| m.stage == cur && m.outcome.is_none())
        {
            let outcome = match self.status(&m.task).await {
                Ok(t) => match t.state {
                    TaskState::Succeeded => Ok(t.result.unwrap_or_default()),
                    TaskState::Dead => Err(t.last_error.unwrap_or_else(|| "dead".into())),
                    TaskState::Cancelled | TaskState::Expired => Err(format!(
                        "{}{}",
                        t.state.as_str(),
                        t.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                    )),
                    _ => continue,
                },
                Err(Error::NotFound(_)) => Err("its task record is gone".to_owned()),
                Err(e) => return Err(e),
            };
            let header = format!("{}:{}:{}", info.id, m.stage, m.index);
            match &outcome {
                Ok(r) => self.workflow_member_finished(&header, Ok(r)).await?,
                Err(e) => self.workflow_member_finished(&header, Err(e)).await?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appending to `()`, `(a,)` and a 16-tuple gives what serde would encode for the longer
    /// tuple; a group's `Continue` list decodes as `Vec<Result<T, String>>`.
    #[test]
    fn encodings_match_serde() {
        let enc = |v: &dyn erased::Enc| v.enc();
        assert_eq!(
            append(&enc(&()), &enc(&5i64)).unwrap(),
            enc(&(5i64,)),
            "unit + x"
        );
        assert_eq!(append(&enc(&(1u8,)), &enc(&"x")).unwrap(), enc(&(1u8, "x")));
        let big: Vec<u32> = (0..20).collect();
        let mut longer = big.clone();
        longer.push(7);
        assert_eq!(append(&enc(&big), &enc(&7u32)).unwrap(), enc(&longer));
        let outs = vec![Ok(enc(&1i64)), Err("boom".to_owned()), Ok(Vec::new())];
        let v: Vec<std::result::Result<Option<i64>, String>> =
            rmp_serde::from_slice(&stage_output(true, true, &outs)).unwrap();
        assert_eq!(v, vec![Ok(Some(1)), Err("boom".into()), Ok(None)]);
        let plain: Vec<i64> =
            rmp_serde::from_slice(&stage_output(true, false, &[Ok(enc(&3i64))])).unwrap();
        assert_eq!(plain, vec![3]);
        assert_eq!(parse_header("a.b:1:22"), Some(("a.b", 1, 22)));
        assert!(append(&enc(&5i64), &enc(&1i64)).is_err());
    }

    mod erased {
        pub(super) trait Enc {
            fn enc(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Enc for T {
            fn enc(&self) -> Vec<u8> {
                crate::client::encode_args(self).unwrap()
            }
        }
    }
}
