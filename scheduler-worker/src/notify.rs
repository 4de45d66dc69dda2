//! The listener: one pub/sub connection per worker process, subscribed to the wake-up channel of
//! each served queue. It turns `r:<shard>` into "claim from this partition" for the fetcher and
//! `s:<shard>:<due>` into "new head" for the promoter. Idle workers wait here instead of polling.
//!
//! A connection the network cut silently (a black hole, or half-open after a fault) neither
//! delivers messages nor fails, so the listener checks it: a `PING` every
//! [`crate::WorkerConfig::health_check_interval`]; without a reply within
//! [`crate::WorkerConfig::health_check_timeout`] it opens a new connection, and every reconnect
//! looks at every partition once (messages published meanwhile were lost).
//!
//! It also keeps the paused flags of [`Ready`]: `pause` / `resume` messages flip them at once;
//! the hash `<ns>:paused` is read once after every (re)subscription (a message may have been
//! lost with the old connection) and every `paused_refresh` (an operator's `HSET` / `HDEL` by
//! hand publishes nothing). Nothing else reads it, so pausing costs unpaused queues nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSubSink;
use scheduler_core::store::Partition;
use scheduler_core::Error;
use scheduler_core::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::messages::PromoterEvent;
use crate::shared::{InflightMap, Ready};

/// What the listener uses.
pub(crate) struct NotifyParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// Partition index by (queue, shard), to route a notification.
    pub(crate) index: HashMap<(String, u16), usize>,
    /// Set for `r:` notifications, all at once on a reconnect.
    pub(crate) ready: Arc<Ready>,
    /// Receives the new heads of `s:` notifications, and a sweep on a reconnect.
    pub(crate) promoter_tx: mpsc::UnboundedSender<PromoterEvent>,
    /// [`crate::WorkerConfig::health_check_interval`].
    pub(crate) health_check_interval: Duration,
    /// [`crate::WorkerConfig::health_check_timeout`].
    pub(crate) health_check_timeout: Duration,
    /// Running tasks, whose cancellation token a `c:<shard>:<id>` message fires.
    pub(crate) inflight: Arc<InflightMap>,
    /// The limits in force: read again on a `limits` message and after every subscription.
    pub(crate) limiter: Arc<crate::limiter::Limiter>,
    /// How often the paused queues are read again ([`crate::WorkerConfig::sweep_interval`]).
    pub(crate) paused_refresh: Duration,
    /// Ends it (intake stops).
    pub(crate) stop_intake: CancellationToken,
}

/// Runs until intake stops, reconnecting with backoff whenever the connection drops.
pub(crate) async fn run(params: Arc<NotifyParams>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            res = listen(&params, &mut backoff) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// An I/O timeout error: `what` got no reply in time.
fn timed_out(what: &str) -> Error {
    redis::RedisError::from((redis::ErrorKind::Io, "no reply in time", what.to_owned())).into()
}

/// Listens until the connection fails; resets `backoff` once subscribed.
async fn listen(params: &NotifyParams, backoff: &mut Duration) -> Result<(), Error> {
    let wait = params.health_check_timeout;
    // A fresh connection each time: in Cluster or Sentinel mode it lands on a live node.
    let (mut sink, mut stream) = params.store.pubsub().await?.split();
    let mut queue_of: HashMap<String, String> = HashMap::new();
    for p in params.partitions.iter() {
        if !queue_of.contains_key(&p.channel) {
            tokio::time::timeout(wait, sink.subscribe(&p.channel))
                .await
                .map_err(|_| timed_out("SUBSCRIBE"))??;
            queue_of.insert(p.channel.clone(), p.queue.clone());
        }
    }
    *backoff = Duration::from_millis(100);
    // Pauses and resumes published before the subscription took effect were missed, and so
    // were changes of the limits.
    refresh_paused(params).await?;
    params.limiter.reload().await?;
    // Anything published before the subscription took effect was missed: look everywhere once.
    params.ready.mark_all();
    let _ = params.promoter_tx.send(PromoterEvent::SweepAll);
    tracing::debug!(channels = queue_of.len(), "listening for wake-ups");
    let messages = async {
        while let Some(msg) = stream.next().await {
            let Some(queue) = queue_of.get(msg.get_channel_name()) else {
                continue;
            };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            dispatch(params, queue, &payload);
        }
        Error::from(redis::RedisError::from((
            redis::ErrorKind::Io,
            "pub/sub connection closed",
        )))
    };
    let refresh = async {
        loop {
            tokio::time::sleep(params.paused_refresh).await;
            if let Err(e) = refresh_paused(params).await {
                tracing::debug!(error = %e, "could not read the paused queues; keeping the flags");
            }
        }
    };
    tokio::select! {
        e = messages => Err(e),
        e = health_check(params, &mut sink) => Err(e),
        () = refresh => unreachable!("the refresh loop never ends"),
    }
}

/// Reads `<ns>:paused` (one `HGETALL`) and sets every partition's paused flag from it.
async fn refresh_paused(params: &NotifyParams) -> Result<(), Error> {
    let paused = tokio::time::timeout(params.health_check_timeout, params.store.paused_queues())
        .await
        .map_err(|_| timed_out("HGETALL of the paused queues"))??;
    for (idx, p) in params.partitions.iter().enumerate() {
        let now = paused.contains_key(&p.queue);
        if now != params.ready.is_paused(idx) {
            tracing::info!(queue = %p.queue, shard = p.shard, paused = now, "queue pause state read from Redis");
        }
        params.ready.set_paused(idx, now);
    }
    Ok(())
}

/// Pauses or resumes every partition of `queue` here.
fn set_queue_paused(params: &NotifyParams, queue: &str, paused: bool) {
    tracing::info!(queue, paused, "queue paused or resumed");
    for (idx, p) in params.partitions.iter().enumerate() {
        if p.queue == queue {
            params.ready.set_paused(idx, paused);
        }
    }
}

/// Pings the pub/sub connection every health-check interval; returns the error that ends it.
async fn health_check(params: &NotifyParams, sink: &mut PubSubSink) -> Error {
    let mut tick = tokio::time::interval(params.health_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match tokio::time::timeout(params.health_check_timeout, sink.ping::<redis::Value>()).await {
            // An error reply (a user not allowed to PING) still proves the connection alive.
            Ok(Ok(_)) => {}
            Ok(Err(e)) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {}
            Ok(Err(e)) => return e.into(),
            Err(_) => return timed_out("PING on the pub/sub connection"),
        }
    }
}

fn dispatch(params: &NotifyParams, queue: &str, payload: &str) {
    match payload {
        "pause" => return set_queue_paused(params, queue, true),
        "resume" => return set_queue_paused(params, queue, false),
        "limits" => {
            let limiter = Arc::clone(&params.limiter);
            tokio::spawn(async move {
                if let Err(e) = limiter.reload().await {
                    tracing::warn!(error = %e, "could not read the limits after a change; read again at the next sweep");
                }
            });
            return;
        }
        _ => {}
    }
    let mut parts = payload.split(':');
    let kind = parts.next();
    let Some(shard) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return;
    };
    let Some(&idx) = params.index.get(&(queue.to_owned(), shard)) else {
        return;
    };
    match kind {
        Some("r") => params.ready.mark(idx),
        // `c:<shard>:<id>`: cancel.lua asks whoever runs task `id` to stop it (the id may hold
        // colons: it is the rest of the message).
        Some("c") => {
            let id = payload.splitn(3, ':').nth(2).unwrap_or("");
            let found = params
                .inflight
                .lock()
                .expect("inflight poisoned")
                .get(&(idx, id.to_owned()))
                .map(|f| f.cancel.clone());
            if let Some(cancel) = found {
                tracing::info!(
                    queue,
                    shard,
                    id,
                    "cancellation requested for a running task"
                );
                cancel.cancel();
            }
        }
        Some("s") => {
            if let Some(due) = parts.next().and_then(|s| s.parse::<i64>().ok()) {
                let _ = params.promoter_tx.send(PromoterEvent::Head(idx, due));
            }
        }
        _ => {}
    }
}
