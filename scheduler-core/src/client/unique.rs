//! Unique-for windows (throttle and debounce): the request option, its key digest, and the
//! enqueue path of requests that carry one (`enqueue_unique.lua`, one script call each). Plain
//! requests never come here. Semantics: `docs/unique.md`.

use std::time::Duration;

use ring::digest::{digest, SHA256};

use super::{count_created, Client, TaskRequest};
use crate::error::{Error, Result};
use crate::id::{shard_of, validate_queue, TaskId};
use crate::scripts::NewTask;
use crate::store::{UniqueMode, UniqueReply};

/// The unique-for option of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Unique {
    /// Throttle or debounce, and the window; `None` when only a key was given.
    pub(crate) window: Option<(UniqueMode, Duration)>,
    /// The caller's key; `None`: the task name and encoded arguments.
    pub(crate) key: Option<String>,
}

/// Hex of the first 16 bytes of the SHA-256 of the unique key of `req` (its caller key, else its
/// name and encoded arguments). The two forms are prefixed differently, so a caller key never
/// equals a name-and-arguments key.
pub(crate) fn unique_digest(req: &TaskRequest, key: Option<&str>) -> String {
    let mut input = Vec::with_capacity(req.name.len() + req.args.len() + 8);
    match key {
        Some(k) => {
            input.extend_from_slice(b"key\0");
            input.extend_from_slice(k.as_bytes());
        }
        None => {
            input.extend_from_slice(b"args\0");
            input.extend_from_slice(req.name.as_bytes());
            input.push(0);
            input.extend_from_slice(&req.args);
        }
    }
    digest(&SHA256, &input).as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new ULID whose shard among `shards` is `shard` (the unique key and the task must share a
/// partition): on average `shards` draws, each a ULID and a CRC-32.
fn id_in_shard(shard: u16, shards: u16) -> String {
    loop {
        let id = ulid::Ulid::new().to_string();
        if shard_of(&id, shards) == shard {
            return id;
        }
    }
}

/// Checks the unique option of `req`: the mode and window with the key, 1 ms at least.
fn check(req: &TaskRequest) -> Result<Option<(UniqueMode, u64, Option<&str>)>> {
    let Some(u) = &req.unique else {
        return Ok(None);
    };
    let Some((mode, window)) = u.window else {
        return Err(Error::InvalidUnique(
            "unique_key needs unique_for or debounce".into(),
        ));
    };
    let ms = window.as_millis();
    if ms == 0 || ms >= 1_000_000_000_000_000 {
        return Err(Error::InvalidUnique(format!(
            "window {window:?}: use 1 ms or more"
        )));
    }
    if u.key.as_deref() == Some("") {
        return Err(Error::InvalidUnique("empty unique_key".into()));
    }
    if req.id.is_some() {
        return Err(Error::InvalidUnique(
            "a caller-given id with unique_for or debounce: the window picks the id".into(),
        ));
    }
    Ok(Some((mode, ms as u64, u.key.as_deref())))
}

impl Client {
    /// [`Client::enqueue_bulk`] of a batch with at least one unique request: every request is
    /// checked first (a bad one fails the call before anything is sent), then the unique ones
    /// go one script call each, in order, then the plain ones through the pipelined path.
    pub(super) async fn enqueue_mixed(
        &self,
        mut reqs: Vec<TaskRequest>,
    ) -> Result<Vec<(TaskId, bool)>> {
        let mut plans = Vec::with_capacity(reqs.len());
        for req in &mut reqs {
            self.check_size_and_priority(req)?;
            validate_queue(&req.queue)?;
            // Headers checked now too (Error::HeadersTooLarge), before anything is sent.
            let headers = crate::headers::encode(&req.headers)?;
            let plan = match check(req)? {
                Some((mode, ms, key)) => {
                    let dig = unique_digest(req, key);
                    // The enqueue span's trace context, as on the plain path (feature `otel`).
                    #[cfg(feature = "otel")]
                    let headers = {
                        let mut h = crate::headers::Headers::new();
                        crate::otel::inject(&mut h);
                        if h.is_empty() {
                            headers
                        } else {
                            req.headers.extend(h);
                            crate::headers::encode(&req.headers)?
                        }
                    };
                    Some((mode, ms, dig, headers))
                }
                None => None,
            };
            if plan.is_none() && req.id.is_none() {
                // Known now, so that a failure can name the plain tasks not sent.
                req.id = Some(ulid::Ulid::new().to_string());
            }
            plans.push(plan);
        }
        let wait = self
            .config
            .replica_wait
            .map(|(n, t)| (n, t.as_millis() as u64));
        let mut out: Vec<Option<(TaskId, bool)>> = vec![None; reqs.len()];
        let mut plain = Vec::new();
        let mut plain_at = Vec::new();
        let mut failure = None;
        for (i, (req, plan)) in reqs.into_iter().zip(plans).enumerate() {
            let Some((mode, window_ms, dig, headers)) = plan else {
                plain_at.push(i);
                plain.push(req);
                continue;
            };
            let shards = self.shards(&req.queue).await?;
            let shard = shard_of(&dig, shards);
            let p = self.store.partition(&req.queue, shard);
            let task = NewTask {
                id: id_in_shard(shard, shards),
                name: req.name.clone(),
                args: req.args,
                due: req.due,
                max_retries: req.max_retries,
                timeout_ms: req.timeout.as_millis() as u64,
                priority: req.priority,
                headers,
                expires: req.expires,
            };
            // Safe to repeat after a lost reply: the retry finds its own window (throttle:
            // reports it as existing; debounce: replaces the task with the same values).
            let reply = self
                .retry(|| {
                    self.store
                        .enqueue_unique(&p, &dig, mode, window_ms, &task, wait)
                })
                .await;
            let (id, created) = match reply {
                Ok(UniqueReply::Created(id)) => (id, true),
                Ok(UniqueReply::Existing(id) | UniqueReply::Replaced(id)) => (id, false),
                Ok(UniqueReply::DeadlinePassed) => {
                    return Err(Error::InvalidDeadline(format!(
                        "task {}: its deadline is passed or before its due time by the Redis server's clock; nothing was stored for it",
                        task.id
                    )))
                }
                Ok(UniqueReply::Invalid) => {
                    return Err(Error::Protocol(format!(
                        "enqueue_unique.lua refused task {} as invalid",
                        task.id
                    )))
                }
                Err(e) => {
                    failure = Some((e, TaskId::new(&req.queue, &task.id)));
                    break;
                }
            };
            let id = TaskId::new(&req.queue, id);
            count_created(
                std::slice::from_ref(&id),
                std::slice::from_ref(&req.name),
                &[created],
            );
            out[i] = Some((id, created));
        }
        let done: Vec<(TaskId, bool)> = out.iter().flatten().cloned().collect();
        let plain_ids: Vec<TaskId> = plain
            .iter()
            .map(|r| TaskId::new(&r.queue, r.id.clone().unwrap_or_default()))
            .collect();
        if let Some((source, first)) = failure {
            if done.is_empty() {
                return Err(source);
            }
            // The unique requests after the failed one are not sent: their ids are not known
            // (the window picks them), so only the failed one and the plain tasks are named.
            let mut refused = vec![first];
            refused.extend(plain_ids);
            return Err(Error::PartlyEnqueued {
                enqueued: done,
                refused,
                source: Box::new(source),
            });
        }
        if !plain.is_empty() {
            match self.enqueue_requests(plain).await {
                Ok(ids) => {
                    for (i, r) in plain_at.into_iter().zip(ids) {
                        out[i] = Some(r);
                    }
                }
                Err(Error::PartlyEnqueued {
                    mut enqueued,
                    refused,
                    source,
                }) => {
                    let mut all = done;
                    all.append(&mut enqueued);
                    return Err(Error::PartlyEnqueued {
                        enqueued: all,
                        refused,
                        source,
                    });
                }
                Err(e) if done.is_empty() => return Err(e),
                Err(e) => {
                    return Err(Error::PartlyEnqueued {
                        enqueued: done,
                        refused: plain_ids,
                        source: Box::new(e),
                    })
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest: SHA-256, hex, 32 characters; a caller key and a name-and-arguments key differ.
    #[test]
    fn digest_is_sha256_of_the_key() {
        let req = TaskRequest::from_encoded("ping", "q", vec![0x91, 0x2a]);
        let d = unique_digest(&req, None);
        assert_eq!(d.len(), 32);
        assert_eq!(d, unique_digest(&req.clone(), None));
        let other = TaskRequest::from_encoded("ping", "q", vec![0x91, 0x2b]);
        assert_ne!(d, unique_digest(&other, None));
        // SHA-256("key\0abc"), first 16 bytes: a fixed value, so a change is caught.
        // (`printf 'key\0abc' | sha256sum`.)
        assert_eq!(
            unique_digest(&req, Some("abc")),
            "2128517b6e80ec3a6bd649a475aa3b94"
        );
    }

    #[test]
    fn ids_land_in_the_shard_asked_for() {
        for shard in 0..16 {
            assert_eq!(shard_of(&id_in_shard(shard, 16), 16), shard);
        }
    }
}
