//! The Redis side of a benchmark: a throwaway `redis-server` when no URL is given, an admin
//! connection, and snapshots of `INFO` (commandstats, cpu, memory) to compute what a phase cost
//! Redis.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use scheduler::redis::{self, aio::MultiplexedConnection};
use serde_json::{json, Value};

use scheduler_testkit::server::NO_PERSISTENCE;
use scheduler_testkit::RedisServer;

use crate::task::local_us;

/// The Redis a benchmark runs against, and an admin connection to it.
#[derive(Debug)]
pub(crate) struct Env {
    /// Its URL.
    pub(crate) url: String,
    /// Admin connection (INFO, CONFIG, SLOWLOG...).
    pub(crate) admin: MultiplexedConnection,
    /// Redis clock minus local clock, µs.
    pub(crate) offset_us: i64,
    /// Redis version.
    pub(crate) version: String,
    _server: Option<RedisServer>,
}

impl Env {
    /// Connects to `url`, or starts a redis-server of our own without one.
    pub(crate) async fn setup(url: Option<String>) -> Result<Self> {
        let (url, server) = match url {
            Some(u) => (u, None),
            None => {
                // The test kit's: a free loopback port, default settings, no persistence.
                let s = RedisServer::try_start(&NO_PERSISTENCE)?;
                (s.url(), Some(s))
            }
        };
        let admin = connect(&url).await?;
        let mut env = Self {
            url,
            admin,
            offset_us: 0,
            version: String::new(),
            _server: server,
        };
        env.offset_us = env.clock_offset_us().await?;
        env.version = env
            .info("server")
            .await?
            .remove("redis_version")
            .unwrap_or_default();
        Ok(env)
    }

    /// Redis clock minus local clock in µs: the median of 7 `TIME` samples, each read against
    /// the local clock at the middle of its round trip.
    pub(crate) async fn clock_offset_us(&mut self) -> Result<i64> {
        let mut samples = Vec::new();
        for _ in 0..7 {
            let before = local_us();
            let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut self.admin).await?;
            let after = local_us();
            samples.push(s * 1_000_000 + us - (before + after) / 2);
        }
        samples.sort_unstable();
        Ok(samples[samples.len() / 2])
    }

    /// Redis's clock now, unix ms.
    pub(crate) async fn redis_now_ms(&mut self) -> Result<i64> {
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut self.admin).await?;
        Ok(s * 1000 + us / 1000)
    }

    /// One `INFO` section as a map.
    pub(crate) async fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.admin)
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// `INFO memory` used_memory, bytes.
    pub(crate) async fn used_memory(&mut self) -> Result<i64> {
        let m = self.info("memory").await?;
        Ok(m.get("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// `DBSIZE`.
    pub(crate) async fn dbsize(&mut self) -> Result<i64> {
        Ok(redis::cmd("DBSIZE").query_async(&mut self.admin).await?)
    }

    /// `CONFIG SET name value`, returning the old value.
    pub(crate) async fn config_set(&mut self, name: &str, value: &str) -> Result<String> {
        let old: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.admin)
            .await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut self.admin)
            .await?;
        Ok(old.get(1).cloned().unwrap_or_default())
    }

    /// A snapshot of the counters a phase is measured with.
    pub(crate) async fn snapshot(&mut self) -> Result<Snapshot> {
        let stats = self.info("commandstats").await?;
        let cpu = self.info("cpu").await?;
        let secs = |k: &str| {
            cpu.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let mut cmds = BTreeMap::new();
        for (k, v) in stats {
            let Some(name) = k.strip_prefix("cmdstat_") else {
                continue;
            };
            let field = |f: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(key, _)| *key == f)
                    .and_then(|(_, x)| x.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            cmds.insert(name.to_owned(), (field("calls"), field("usec")));
        }
        Ok(Snapshot {
            at: Instant::now(),
            cmds,
            cpu_s: secs("used_cpu_sys") + secs("used_cpu_user"),
        })
    }

    /// Deletes every key of namespace `ns` (SCAN + UNLINK).
    pub(crate) async fn delete_namespace(&mut self, ns: &str) -> Result<u64> {
        let mut cursor = 0u64;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{ns}:*"))
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut self.admin)
                .await?;
            if !keys.is_empty() {
                n += keys.len() as u64;
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut self.admin)
                    .await?;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}

/// Opens a multiplexed connection.
pub(crate) async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Commandstats (calls, usec per command) and Redis CPU seconds at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    at: Instant,
    cmds: BTreeMap<String, (u64, u64)>,
    cpu_s: f64,
}

/// What Redis did between two snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    /// Wall time between the snapshots, s.
    pub(crate) secs: f64,
    /// Per command: calls, usec (the snapshots' own INFO calls left out).
    pub(crate) cmds: BTreeMap<String, (u64, u64)>,
    /// Redis CPU (user + sys), s.
    pub(crate) cpu_s: f64,
}

impl Snapshot {
    /// The cost from `self` to `later`.
    pub(crate) fn cost_to(&self, later: &Snapshot) -> Cost {
        let mut cmds = BTreeMap::new();
        for (name, (calls, usec)) in &later.cmds {
            let (c0, u0) = self.cmds.get(name).copied().unwrap_or((0, 0));
            let mut calls = calls.saturating_sub(c0);
            // The INFO calls that took the snapshots (two per snapshot: commandstats and cpu).
            if name == "info" {
                calls = calls.saturating_sub(2);
            }
            if calls > 0 {
                cmds.insert(name.clone(), (calls, usec.saturating_sub(u0)));
            }
        }
        Cost {
            secs: later.at.duration_since(self.at).as_secs_f64(),
            cmds,
            cpu_s: later.cpu_s - self.cpu_s,
        }
    }
}

impl Cost {
    /// Commands of every kind.
    pub(crate) fn calls(&self) -> u64 {
        self.cmds.values().map(|(c, _)| c).sum()
    }

    /// Script calls (EVALSHA and EVAL) and their µs, summed.
    pub(crate) fn scripts(&self) -> (u64, u64) {
        ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"]
            .iter()
            .filter_map(|k| self.cmds.get(*k))
            .fold((0, 0), |(c, u), (c1, u1)| (c + c1, u + u1))
    }

    /// As JSON, per task when `tasks` > 0: script calls and their µs (INFO commandstats; Redis
    /// counts the commands a script runs both on their own and inside the script's time), Redis
    /// CPU µs (user + sys: adds networking and parsing), the Redis CPU busy share, and each
    /// command's calls and µs per call.
    pub(crate) fn to_json(&self, tasks: u64) -> Value {
        let per = |x: f64| if tasks > 0 { x / tasks as f64 } else { x };
        let (script_calls, script_usec) = self.scripts();
        let by_cmd: serde_json::Map<String, Value> = self
            .cmds
            .iter()
            .map(|(k, (c, u))| {
                (
                    k.clone(),
                    json!({ "calls": c, "usec_per_call": round2(*u as f64 / (*c).max(1) as f64) }),
                )
            })
            .collect();
        json!({
            "script_calls_per_task": round2(per(script_calls as f64)),
            "script_usec_per_task": round2(per(script_usec as f64)),
            "redis_calls_per_task": round2(per(self.calls() as f64)),
            "redis_cpu_us_per_task": round2(per(self.cpu_s * 1e6)),
            "redis_cpu_busy": round2(if self.secs > 0.0 { self.cpu_s / self.secs } else { 0.0 }),
            "commands": by_cmd,
        })
    }
}

/// Rounds to 2 decimals, for readable JSON.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}
