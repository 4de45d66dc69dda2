//! The producer of a scenario: enqueues every task, records every acknowledged one, and sends again what a full Redis refused.

use crate::*;

pub(crate) async fn connect_client(url: &str) -> anyhow::Result<Client> {
    Ok(Client::with_config(ClientConfig::new(url).namespace(NS)).await?)
}

#[derive(Default)]
pub(crate) struct Produced {
    pub(crate) acked: Vec<(String, i64)>,
    pub(crate) errors: u64,
    pub(crate) enqueue_per_s: f64,
    pub(crate) created: u64,
    /// Memory-full: batches refused for lack of memory, set aside (id, due ms).
    pub(crate) rejected: Vec<(String, i64)>,
    /// Memory-full: tasks set aside in all.
    pub(crate) set_aside: u64,
    /// Memory-full: how many enqueue calls were refused, and the first error's text.
    pub(crate) oom_errors: u64,
    pub(crate) oom_error_text: String,
    /// Clock skew: tasks sent with `eta` from a clock 60 s behind: (id, the producer's intended
    /// due time on the true clock).
    pub(crate) eta_behind: Vec<(String, i64)>,
    /// Clock skew: tasks sent per (offset, countdown|eta).
    pub(crate) skew_modes: HashMap<String, u64>,
}

/// Clock-skew producer modes: (clock offset ms, uses eta).
pub(crate) const SKEW_MODES: [(i64, bool); 4] = [
    (60_000, false),
    (-60_000, false),
    (-60_000, true),
    (60_000, true),
];

/// Enqueues `spec.tasks` tasks with fixed ids `t<i>`, in batches of 200, retrying a failed
/// batch with the same ids and due times; logs every acknowledged (id, due ms).
pub(crate) async fn produce(url: String, spec: Spec) -> anyhow::Result<Produced> {
    let client = connect_client(&url).await?;
    let mut out = Produced::default();
    let mut acked = Vec::with_capacity(spec.tasks);
    let mut errors = 0u64;
    let mut created = 0u64;
    let mut enqueue_per_s: f64 = 0.0;
    let batch = 200;
    let t0 = Instant::now();
    let spread_n = spec.tasks - spec.burst;
    let mut i = 0;
    while i < spec.tasks {
        let n = batch.min(spec.tasks - i);
        if i >= spec.burst && spread_n > 0 {
            // Pace the spread part.
            let at = spec.spread_ms * (i - spec.burst) as u64 / spread_n as u64;
            let target = Duration::from_millis(at);
            let burst_end = Duration::from_secs_f64(if spec.burst > 0 {
                spec.burst as f64 / enqueue_per_s.max(1.0)
            } else {
                0.0
            });
            let el = t0.elapsed();
            if el < burst_end + target {
                tokio::time::sleep(burst_end + target - el).await;
            }
        }
        let base = now_ms();
        // Clock skew: this batch's producer clock offset, and countdown or eta.
        let (offset, use_eta) = if spec.skew_modes > 0 {
            SKEW_MODES[(i / batch) % spec.skew_modes.min(SKEW_MODES.len())]
        } else {
            (0, true)
        };
        let mut delays = Vec::with_capacity(n);
        let items: Vec<(String, i64)> = (i..i + n)
            .map(|k| {
                let d = spec.min_delay_ms as i64
                    + if spec.delay_max_ms > 0 {
                        rand::random_range(0..=spec.delay_max_ms) as i64
                    } else {
                        0
                    };
                delays.push(d);
                // With eta, the due time is the instant asked for on the producer's own clock;
                // with countdown, at least the true enqueue time plus the delay.
                (format!("t{k}"), base + if use_eta { offset } else { 0 } + d)
            })
            .collect();
        if spec.skew_modes > 0 {
            let mode = format!(
                "{}{}s_{}",
                if offset >= 0 { "+" } else { "" },
                offset / 1000,
                if use_eta { "eta" } else { "countdown" }
            );
            *out.skew_modes.entry(mode).or_default() += n as u64;
            if use_eta && offset < 0 {
                out.eta_behind.extend(
                    items
                        .iter()
                        .zip(&delays)
                        .map(|((id, _), d)| (id.clone(), base + d)),
                );
            }
        }
        let reqs = || -> anyhow::Result<Vec<TaskRequest>> {
            items
                .iter()
                .zip(&delays)
                .map(|((id, due), d)| {
                    let call = chaos_rec::new(spec.task_ms, 0).id(id.clone());
                    let call = if use_eta {
                        call.eta(UNIX_EPOCH + Duration::from_millis(*due as u64))
                    } else {
                        call.countdown(Duration::from_millis(*d as u64))
                    };
                    Ok(call.into_request()?)
                })
                .collect()
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            match client.enqueue_bulk(reqs()?).await {
                Ok(out) => {
                    created += out.iter().filter(|(_, c)| *c).count() as u64;
                    acked.extend(items.iter().cloned());
                    break;
                }
                Err(e) if spec.memory_full && e.to_string().contains("OOM") => {
                    out.oom_errors += 1;
                    if out.oom_error_text.is_empty() {
                        out.oom_error_text = format!("{e:?}").chars().take(160).collect();
                    }
                    // Only the refused tasks are set aside: one that was accepted may run and,
                    // with no result kept, be created anew by a second send.
                    let (ok, refused) = split_refused(&e, &items);
                    created += ok.iter().filter(|(_, c)| *c).count() as u64;
                    acked.extend(ok.into_iter().map(|(item, _)| item));
                    out.set_aside += refused.len() as u64;
                    out.rejected.extend(refused);
                    break;
                }
                Err(e) => {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("[{}] enqueue error (retrying same ids): {e}", spec.name);
                    }
                    if Instant::now() > give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        i += n;
        if i == spec.burst {
            enqueue_per_s = spec.burst as f64 / t0.elapsed().as_secs_f64();
        }
    }
    for sp in &spec.special {
        let mut call = chaos_rec::new(0, sp.mode).id(sp.id).queue(sp.queue);
        if let Some(r) = sp.max_retries {
            call = call.max_retries(r);
        }
        client.enqueue_bulk(vec![call.into_request()?]).await?;
    }
    out.acked = acked;
    out.errors = errors;
    out.enqueue_per_s = enqueue_per_s;
    out.created = created;
    Ok(out)
}

impl Produced {
    /// Tasks set aside after an out-of-memory refusal (before any was sent again).
    pub(crate) fn oom_errors_tasks(&self) -> u64 {
        self.set_aside
    }
}

/// A produced task: its id and due time (ms, Redis clock).
pub(crate) type Item = (String, i64);

/// The items of a failed bulk enqueue that Redis accepted (with whether they were created) and
/// those it refused: all refused unless the error is [`scheduler::Error::PartlyEnqueued`].
pub(crate) fn split_refused(
    e: &scheduler::Error,
    items: &[Item],
) -> (Vec<(Item, bool)>, Vec<Item>) {
    let scheduler::Error::PartlyEnqueued { enqueued, .. } = e else {
        return (Vec::new(), items.to_vec());
    };
    let accepted: HashMap<&str, bool> = enqueued.iter().map(|(id, c)| (id.id(), *c)).collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for item in items {
        match accepted.get(item.0.as_str()) {
            Some(c) => ok.push((item.clone(), *c)),
            None => refused.push(item.clone()),
        }
    }
    (ok, refused)
}

/// Memory-full, once the workers run: sends the set-aside batches again (same ids and due
/// times) until Redis accepts them; returns how many tries were refused and how long it took.
pub(crate) async fn resend(url: &str, produced: &mut Produced) -> anyhow::Result<(u64, i64)> {
    let client = connect_client(url).await?;
    let t0 = now_ms();
    let mut refused = 0u64;
    let rejected = std::mem::take(&mut produced.rejected);
    let give_up = Instant::now() + Duration::from_secs(300);
    for chunk in rejected.chunks(200) {
        let mut chunk = chunk.to_vec();
        let reqs = |chunk: &[(String, i64)]| -> anyhow::Result<Vec<TaskRequest>> {
            chunk
                .iter()
                .map(|(id, due)| {
                    Ok(chaos_rec::new(0, 0)
                        .id(id.clone())
                        .eta(UNIX_EPOCH + Duration::from_millis(*due as u64))
                        .into_request()?)
                })
                .collect()
        };
        loop {
            match client.enqueue_bulk(reqs(&chunk)?).await {
                Ok(_) => {
                    produced.acked.extend(chunk.iter().cloned());
                    break;
                }
                Err(e) if Instant::now() < give_up => {
                    refused += 1;
                    let (ok, rest) = split_refused(&e, &chunk);
                    produced.acked.extend(ok.into_iter().map(|(item, _)| item));
                    chunk = rest;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    produced.rejected.extend(chunk.iter().cloned());
                    eprintln!("[memory-full] gave up resending: {e}");
                    break;
                }
            }
        }
    }
    Ok((refused, now_ms() - t0))
}
